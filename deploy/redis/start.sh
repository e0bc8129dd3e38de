#!/bin/sh
# Starts the compose Redis with serialtrack's users (deploy/redis/users.acl.template, made by
# `python -m serialtrack.credentials`): each #${VAR} becomes the SHA-256 of that variable's value,
# so no password is written to a file. Users made since with `serialtrack credentials create`
# (kept in the same file by ACL SAVE) are carried over; the built-in ones are rewritten from the
# template, so a changed password or a new event type takes effect at the next start.
# Usage: start.sh TEMPLATE ACL_FILE [redis-server arguments...]
set -eu
template=$1
acl=$2
shift 2
tmp="$acl.new"
: > "$tmp"
chmod 600 "$tmp"
while IFS= read -r line; do
  while :; do
    case $line in
      *'${'*'}'*) ;;
      *) break ;;
    esac
    var=${line#*\$\{}
    var=${var%%\}*}
    value=$(printenv "$var" || true)
    if [ -z "$value" ]; then
      echo "start.sh: $var is not set (every Redis user needs its password)" >&2
      rm -f "$tmp"
      exit 1
    fi
    hash=$(printf '%s' "$value" | sha256sum | cut -d' ' -f1)
    line="${line%%\$\{*}$hash${line#*\}}"
  done
  printf '%s\n' "$line" >> "$tmp"
done < "$template"
if [ -f "$acl" ]; then
  builtins=$(awk '{ printf "%s ", $2 }' "$template")
  awk -v builtins="$builtins" '
    BEGIN { n = split(builtins, names, " "); for (i = 1; i <= n; i++) builtin[names[i]] = 1 }
    $1 == "user" && !($2 in builtin)' "$acl" >> "$tmp"
fi
mv "$tmp" "$acl"
# The image's entrypoint: it gives /data to the redis user and drops root.
exec docker-entrypoint.sh redis-server "$@" --aclfile "$acl"
