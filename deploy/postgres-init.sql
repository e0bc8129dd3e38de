-- One database per service, each owned by the service's own role: a service can read and change
-- its own store and nothing else, and no service connects as the superuser (POSTGRES_USER, used
-- for administration only). Run by the postgres image at its first start; the passwords come
-- from the container's environment (docker-compose.yml), read with psql's \getenv.
\getenv inventory_password INVENTORY_DB_PASSWORD
\getenv warranty_password WARRANTY_DB_PASSWORD
\getenv theft_password THEFT_DB_PASSWORD
\getenv recalls_password RECALLS_DB_PASSWORD

CREATE ROLE inventory LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'inventory_password';
CREATE ROLE warranty LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'warranty_password';
CREATE ROLE theft LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'theft_password';
CREATE ROLE recalls LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'recalls_password';

CREATE DATABASE inventory OWNER inventory;
CREATE DATABASE warranty OWNER warranty;
CREATE DATABASE theft OWNER theft;
CREATE DATABASE recalls OWNER recalls;

-- PUBLIC may connect to any database by default: only the owner may.
REVOKE ALL ON DATABASE inventory FROM PUBLIC;
REVOKE ALL ON DATABASE warranty FROM PUBLIC;
REVOKE ALL ON DATABASE theft FROM PUBLIC;
REVOKE ALL ON DATABASE recalls FROM PUBLIC;
REVOKE ALL ON DATABASE serialtrack FROM PUBLIC;
