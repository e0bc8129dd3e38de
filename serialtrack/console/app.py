"""The web console's pages (FastAPI, Jinja2 templates, a little vanilla JavaScript for the live parts).

Every page asks the services with the signed-in user's token (backend.py) and shows what comes
back; the navigation offers only the pages the user's role can use, and a service's 403 is shown
as such. Customers' data is shaped by the services (shared/auth.py VISIBILITY): a field the role
may not see arrives as null and is shown as "hidden".
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from shared.auth import (
    ANOMALIES,
    CUSTOMER_CASES,
    CUSTOMER_PURCHASES,
    RECALL_CAMPAIGNS,
    THEFT_CASES,
    UNIT_LISTS,
    UNIT_LOOKUP,
)
from shared.identity import IdentityError, normalize_manufacturer, normalize_serial
from shared.settings import NoRedisConfigured, Settings
from shared.tokens import ADMIN, client_token

from . import charts
from .backend import Backend, Refused, ServiceDown, service_urls
from .signin import COOKIE, SESSION_LIFETIME_S, Session, Sessions, redeem_code
from .story import at, timeline, unit_found, when

HERE = Path(__file__).parent
LIVE_POLL_S = 0.5  # how often the theft desk's event stream asks theft for new alerts
NEAR_MISSES = 12
CAMPAIGN_CHART_UNITS = 10_000  # units read (1,000 a request) to draw a campaign's progress over time


@dataclass(frozen=True)
class Page:
    key: str
    path: str
    title: str
    roles: tuple[str, ...]  # besides admin


PAGES = (
    Page("lookup", "/", "Unit lookup", UNIT_LOOKUP),
    Page("customer", "/customer", "Customer", CUSTOMER_PURCHASES),
    Page("recalls", "/recalls", "Recalls", RECALL_CAMPAIGNS),
    Page("theft", "/theft", "Theft desk", THEFT_CASES),
    Page("stock", "/stock", "Stock", UNIT_LISTS),
    Page("claims", "/claims", "Claims queue", CUSTOMER_CASES),
    Page("system", "/system", "System", ()),  # the operator's view: Redis streams, not customers' data
)
PAGE = {p.key: p for p in PAGES}


def may(session: Session, page: str) -> bool:
    return session.role == ADMIN or session.role in PAGE[page].roles


class SignInNeeded(Exception):
    def __init__(self, message: str = ""):
        self.message = message


class NotForRole(Exception):
    pass


def _format_time(value: Any, fmt: str = "%Y-%m-%d %H:%M") -> str:
    t = value if isinstance(value, datetime) else when(value)
    return f"{t.astimezone(UTC):{fmt}} UTC" if t else "-"


def parse_query(text: str) -> tuple[str | None, str]:
    """What a person types: ``SERIAL``, ``MANUFACTURER SERIAL`` or ``MANUFACTURER/SERIAL``."""
    parts = [p for p in re.split(r"[\s/]+", text.strip()) if p]
    if len(parts) == 1:
        return None, normalize_serial(parts[0])
    if len(parts) == 2:
        return normalize_manufacturer(parts[0]), normalize_serial(parts[1])
    raise IdentityError("type a serial, or a manufacturer and a serial (e.g. acme TV1A2B003)")


def create_app(settings: Settings | None = None, urls: dict[str, str] | None = None) -> FastAPI:
    settings = settings or Settings()
    backend = Backend(urls or service_urls(settings))
    sessions = Sessions()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await backend.close()

    app = FastAPI(title="serialtrack console", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["t"] = _format_time
    templates.env.filters["label"] = lambda v: str(v).replace("_", " ") if v is not None else "-"
    templates.env.globals["quote"] = lambda v: quote(str(v), safe="")

    @app.middleware("http")
    async def headers(request: Request, call_next):
        origin = request.headers.get("origin")
        if request.method == "POST" and origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            # Forms post to their own host only (a TLS proxy in front may change the scheme, not the host).
            return Response("cross-site request refused", status_code=403)
        response = await call_next(request)
        # Everything is served from here: no CDN, no inline script, no framing, no referrer to other sites.
        response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; "
                                                       "frame-ancestors 'none'; form-action 'self'")
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"  # no-referrer would make the browser send Origin: null
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.exception_handler(SignInNeeded)
    async def sign_in_needed(request: Request, exc: SignInNeeded):
        target = "/signin" + (f"?message={quote(exc.message)}" if exc.message else "")
        response = RedirectResponse(target, status_code=303)
        if exc.message:  # the token stopped working: this session is over
            sessions.close(request.cookies.get(COOKIE))
            response.delete_cookie(COOKIE)
        return response

    @app.exception_handler(NotForRole)
    async def not_for_role(request: Request, exc: NotForRole):
        session = sessions.get(request.cookies.get(COOKIE))
        return render(request, session, "message.html", {"heading": "Not for your role",
                      "message": f"Role {session.role if session else '?'} cannot use this page."}, status=403)

    def session_of(request: Request, page: str | None = None) -> Session:
        session = sessions.get(request.cookies.get(COOKIE))
        if session is None:
            raise SignInNeeded()
        if page is not None and not may(session, page):
            raise NotForRole()
        return session

    def render(request: Request, session: Session | None, template: str, context: dict, status: int = 200):
        nav = [p for p in PAGES if session and may(session, p.key)]
        return templates.TemplateResponse(request, template, {"session": session, "nav": nav, **context},
                                          status_code=status)

    def problems(results: dict[str, Any]) -> tuple[list[ServiceDown], list[Refused]]:
        down = [r for r in results.values() if isinstance(r, ServiceDown)]
        refused = [r for r in results.values() if isinstance(r, Refused)]
        if any(r.status == 401 for r in refused):
            raise SignInNeeded("Your token no longer works (revoked or expired): sign in again.")
        return down, refused

    async def one(session: Session, service: str, path: str, params: dict | None = None) -> tuple[Any, list, list]:
        results = await backend.gather(session.token, {"it": (service, path, params)})
        down, refused = problems(results)
        value = results["it"]
        return (None if isinstance(value, Exception) else value), down, refused

    # --- signing in ---

    @app.get("/signin", response_class=HTMLResponse)
    async def signin_page(request: Request, code: str | None = None, message: str | None = None):
        if code is not None:
            token = client_token(settings.data_dir)
            if token and redeem_code(settings.data_dir, code):
                return await open_session(request, token)
            message = ("This sign-in link was used already or has expired. Sign in with a token, or get a new "
                       "link with `serialtrack console --link`.")
        return render(request, None, "signin.html", {"message": message})

    @app.post("/signin")
    async def signin_post(request: Request):
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        if not token:
            return render(request, None, "signin.html", {"message": "Paste a token to sign in."}, status=400)
        return await open_session(request, token)

    async def open_session(request: Request, token: str):
        try:
            me = await backend.get(token, "inventory", "/whoami")
        except ServiceDown as exc:
            return render(request, None, "signin.html", {"message": f"Cannot sign in now: {exc}. The inventory "
                          "service says who a token belongs to; start it (`serialtrack up`) and try again."},
                          status=503)
        except Refused as exc:
            return render(request, None, "signin.html", {"message": "That token does not work: unknown, expired "
                          f"or revoked ({exc.detail})."}, status=401)
        session_id = sessions.open(token, me["name"], me["role"], me.get("manufacturer"))
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(COOKIE, session_id, max_age=SESSION_LIFETIME_S, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/")
        return response

    @app.post("/signout")
    async def signout(request: Request):
        sessions.close(request.cookies.get(COOKIE))
        response = RedirectResponse("/signin?message=" + quote("Signed out."), status_code=303)
        response.delete_cookie(COOKIE)
        return response

    @app.get("/healthz")
    async def healthz():
        return {"service": "console", "status": "ok"}

    # --- unit lookup ---

    @app.get("/", response_class=HTMLResponse)
    async def lookup(request: Request, q: str = ""):
        session = session_of(request, "lookup")
        context: dict[str, Any] = {"q": q, "page": "lookup"}
        if not q.strip():
            return render(request, session, "lookup.html", context)
        try:
            manufacturer, serial = parse_query(q)
        except IdentityError as exc:
            return render(request, session, "lookup.html", {**context, "error": str(exc)}, status=400)
        if manufacturer is not None:
            return RedirectResponse(f"/unit/{quote(manufacturer)}/{quote(serial)}", status_code=303)
        found, down, refused = await one(session, "inventory", "/serials", {"serial": serial, "match": "exact"})
        matches = (found or {}).get("items", [])
        if len(matches) == 1:
            return RedirectResponse(f"/unit/{quote(matches[0]['manufacturer'])}/{quote(serial)}", status_code=303)
        near = [] if matches or down else await near_misses(session, serial, None)
        return render(request, session, "lookup.html", {**context, "serial": serial, "matches": matches,
                                                         "near": near, "down": down, "refused": refused})

    async def near_misses(session: Session, serial: str, manufacturer: str | None) -> list[dict]:
        """Serials that start like the one typed: the whole of it, then ever shorter beginnings (at least
        three characters), until some match. (Fuzzy matching, when it lands, replaces this.)"""
        for length in range(len(serial), min(len(serial), 3) - 1, -1):
            try:
                found = await backend.get(session.token, "inventory", "/serials",
                                          {"serial": serial[:length], "match": "prefix",
                                           "manufacturer": manufacturer, "limit": NEAR_MISSES})
            except (ServiceDown, Refused):
                return []
            items = [u for u in (found or {}).get("items", []) if u["serial"] != serial]
            if items:
                return items
        return []

    @app.get("/unit/{manufacturer}/{serial}", response_class=HTMLResponse)
    async def unit(request: Request, manufacturer: str, serial: str):
        session = session_of(request, "lookup")
        try:
            manufacturer, serial = normalize_manufacturer(manufacturer), normalize_serial(serial)
        except IdentityError as exc:
            return render(request, session, "lookup.html", {"q": f"{manufacturer} {serial}", "error": str(exc),
                                                            "page": "lookup"}, status=400)
        path = f"/{quote(manufacturer)}/{quote(serial)}"
        results = await backend.gather(session.token, {
            "inventory": ("inventory", f"/units{path}", None), "warranty": ("warranty", f"/warranties{path}", None),
            "theft": ("theft", f"/stolen{path}", None), "recalls": ("recalls", f"/units{path}/recalls", None)})
        down, refused = problems(results)
        docs = {k: (None if isinstance(v, Exception) else v) for k, v in results.items()}
        context: dict[str, Any] = {"q": f"{manufacturer} {serial}", "manufacturer": manufacturer, "serial": serial,
                                   "down": down, "refused": refused, "page": "lookup", **docs}
        if not unit_found(**docs):
            context["near"] = await near_misses(session, serial, manufacturer) if not down else []
            return render(request, session, "lookup.html", {**context, "unknown": True}, status=404)
        context["entries"] = timeline(**docs)
        coverage = (docs["warranty"] or {}).get("coverage")
        if coverage:
            context["coverage_svg"] = charts.coverage_bar(at(coverage["starts"]), at(coverage["ends"]),
                                                          at(coverage["return_window_ends"]), datetime.now(UTC))
        return render(request, session, "unit.html", context)

    # --- customer ---

    @app.get("/customer", response_class=HTMLResponse)
    async def customer(request: Request, id: str = ""):
        session = session_of(request, "customer")
        context: dict[str, Any] = {"customer_id": id.strip(), "page": "customer"}
        if not context["customer_id"]:
            return render(request, session, "customer.html", context)
        purchases, down, refused = await one(session, "warranty", f"/customers/{quote(id.strip())}/purchases")
        purchases = purchases or []
        details = await backend.gather(session.token, {
            f"{p['manufacturer']}/{p['serial']}": ("warranty", (f"/warranties/{quote(p['manufacturer'])}/"
                                                   f"{quote(p['serial'])}"), None) for p in purchases})
        d2, r2 = problems(details)
        claims, d3, r3 = await one(session, "warranty", "/claims", {"customer_id": id.strip(), "limit": 50})
        return render(request, session, "customer.html", {
            **context, "purchases": purchases, "claims": (claims or {}).get("items", []),
            "warranties": {k: v for k, v in details.items() if not isinstance(v, Exception)},
            "down": down + d2 + d3, "refused": refused + r2 + r3})

    # --- recalls ---

    @app.get("/recalls", response_class=HTMLResponse)
    async def recalls(request: Request, open: str = ""):
        session = session_of(request, "recalls")
        listed, down, refused = await one(session, "recalls", "/recalls",
                                          {"open": open or None, "limit": 200})
        return render(request, session, "recalls.html", {"page": "recalls", "open": open, "down": down,
                                                         "refused": refused, "recalls": listed})

    @app.get("/recalls/{recall_id}", response_class=HTMLResponse)
    async def campaign(request: Request, recall_id: str, status: str = "", offset: int = 0):
        session = session_of(request, "recalls")
        results = await backend.gather(session.token, {
            "recall": ("recalls", f"/recalls/{quote(recall_id)}", None),
            "units": ("recalls", f"/recalls/{quote(recall_id)}/units",
                      {"status": status or None, "limit": 100, "offset": max(0, offset)})})
        down, refused = problems(results)
        recall = None if isinstance(results["recall"], Exception) else results["recall"]
        if recall is None and not down:
            return render(request, session, "message.html", {
                "heading": "No such recall", "message": f"The recalls service knows no recall {recall_id} "
                "that you may see."}, status=404)
        chart, chart_note = None, None
        if recall:
            history, offset_read = [], 0
            while offset_read < min(recall["progress"]["affected"], CAMPAIGN_CHART_UNITS):
                page = await backend.get(session.token, "recalls", f"/recalls/{quote(recall_id)}/units",
                                         {"limit": 1000, "offset": offset_read})
                if not page or not page["items"]:
                    break
                history += page["items"]
                offset_read += len(page["items"])
            # A campaign larger than that is drawn from its first units (serial order), as fractions of them.
            sampled = len(history) < recall["progress"]["affected"]
            chart = charts.progress_chart(charts.campaign_points(history, len(history) if sampled else
                                                                 recall["progress"]["affected"]), datetime.now(UTC))
            if sampled:
                chart_note = (f"Drawn from the first {len(history):,} of {recall['progress']['affected']:,} units "
                              "(serial order); the counts below are the whole campaign's.")
        units = None if isinstance(results["units"], Exception) else results["units"]
        return render(request, session, "campaign.html", {
            "page": "recalls", "recall": recall, "units": units, "status": status, "chart": chart, "chart_note": chart_note,
            "down": down, "refused": refused, "statuses": STATUSES})

    @app.get("/recalls/{recall_id}/report.{fmt}")
    async def campaign_report(request: Request, recall_id: str, fmt: str):
        session = session_of(request, "recalls")
        if fmt not in ("csv", "json"):
            return Response("report.csv or report.json", status_code=404)
        return await passthrough(session, "recalls", f"/recalls/{quote(recall_id)}/report.{fmt}", {},
                                 f"{recall_id}-report.{fmt}")

    async def passthrough(session: Session, service: str, path: str, params: dict, filename: str) -> Response:
        """A service's download, streamed to the browser as it comes, saved under ``filename``."""
        try:
            response = await backend.open_stream(session.token, service, path, params)
        except ServiceDown as exc:
            return Response(f"{exc}: the download is not available until it is back.", status_code=503)
        if response.status_code != 200:
            await response.aclose()
            if response.status_code == 401:
                raise SignInNeeded("Your token no longer works (revoked or expired): sign in again.")
            return Response(f"{service} answered {response.status_code} to this download.",
                            status_code=response.status_code)

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_bytes():
                    yield chunk
            finally:
                await response.aclose()
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", filename)
        return StreamingResponse(body(), media_type=response.headers.get("content-type", "application/octet-stream"),
                                 headers={"Content-Disposition": f'attachment; filename="{safe}"'})

    # --- theft desk ---

    def alert_filter(agency: str, kind: str, case: str = ""):
        def keep(alert: dict) -> bool:
            return ((not kind or alert["kind"] == kind)
                    and (not case or f"{alert['agency']}:{alert['case_number']}" == case))
        return {"agency": agency or None}, keep

    @app.get("/theft", response_class=HTMLResponse)
    async def theft(request: Request, agency: str = "", kind: str = "", status: str = ""):
        session = session_of(request, "theft")
        params, keep = alert_filter(agency, kind)
        listed, down, refused = await one(session, "theft", "/alerts", {**params, "status": status or None,
                                                                        "limit": 200})
        alerts = [a for a in (listed or {}).get("items", []) if keep(a)]
        return render(request, session, "theft.html", {
            "page": "theft", "alerts": alerts, "total": (listed or {}).get("total"), "agency": agency, "kind": kind,
            "status": status, "down": down, "refused": refused,
            "live": f"/theft/live?agency={quote(agency)}&kind={quote(kind)}"})

    @app.get("/theft/live")
    async def theft_live(request: Request, agency: str = "", kind: str = ""):
        """Server-sent events: each new alert as a table row, within ``LIVE_POLL_S`` of theft having it."""
        session = session_of(request, "theft")
        params, keep = alert_filter(agency, kind)
        row = templates.env.get_template("alert_row.html")

        async def events() -> AsyncIterator[str]:
            seen: set[str] | None = None
            quiet = 0.0
            while not await request.is_disconnected():
                try:
                    page = await backend.get(session.token, "theft", "/alerts", {**params, "limit": 100})
                    ids = [a["alert_id"] for a in page["items"]]
                    if seen is None:
                        seen = set(ids)  # what the page already shows
                        yield "event: status\ndata: live\n\n"
                    for alert in reversed(page["items"]):
                        if alert["alert_id"] not in seen:
                            seen.add(alert["alert_id"])
                            if keep(alert):
                                html = row.render(a=alert, fresh=True)
                                yield "event: alert\ndata: " + json.dumps(html) + "\n\n"
                                quiet = 0.0
                except ServiceDown:
                    yield "event: status\ndata: theft-down\n\n"
                except Refused:
                    yield "event: status\ndata: signed-out\n\n"
                    return
                await asyncio.sleep(LIVE_POLL_S)
                quiet += LIVE_POLL_S
                if quiet >= 15:  # a comment now and then keeps proxies from closing a quiet stream
                    quiet = 0.0
                    yield ": keep-alive\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/theft/case/{agency}/{case_number}", response_class=HTMLResponse)
    async def theft_case(request: Request, agency: str, case_number: str):
        session = session_of(request, "theft")
        params, keep = alert_filter(agency, "", f"{agency}:{case_number}")
        listed, down, refused = await one(session, "theft", "/alerts", {**params, "limit": 1000})
        alerts = [a for a in (listed or {}).get("items", []) if keep(a)]
        units = sorted({(a["manufacturer"], a["serial"]) for a in alerts})
        stolen = await backend.gather(session.token, {f"{m}/{s}": ("theft", f"/stolen/{quote(m)}/{quote(s)}", None)
                                                      for m, s in units})
        d2, r2 = problems(stolen)
        return render(request, session, "case.html", {
            "page": "theft", "agency": agency, "case_number": case_number, "alerts": alerts,
            "units": {k: v for k, v in stolen.items() if not isinstance(v, Exception)},
            "down": down + d2, "refused": refused + r2})

    @app.get("/theft/export/{what}.{fmt}")
    async def theft_export(request: Request, what: str, fmt: str, agency: str = ""):
        session = session_of(request, "theft")
        if what not in ("alerts", "retailer-reports") or fmt not in ("csv", "json"):
            return Response("alerts or retailer-reports, as csv or json", status_code=404)
        params = {"agency": agency} if what == "alerts" and agency else {}
        return await passthrough(session, "theft", f"/exports/{what}.{fmt}", params, f"theft-{what}.{fmt}")

    # --- stock ---

    @app.get("/stock", response_class=HTMLResponse)
    async def stock(request: Request):
        session = session_of(request, "stock")
        calls: dict[str, tuple[str, str, dict | None]] = {"stock": ("inventory", "/stock", None)}
        if session.role == ADMIN or session.role in ANOMALIES:
            calls["anomalies"] = ("inventory", "/anomalies", {"status": "open", "limit": 100})
        results = await backend.gather(session.token, calls)
        down, refused = problems(results)
        return render(request, session, "stock.html", {
            "page": "stock", "down": down, "refused": refused, "shows_anomalies": "anomalies" in calls,
            **{k: (None if isinstance(v, Exception) else v) for k, v in results.items()}})

    # --- claims queue ---

    @app.get("/claims", response_class=HTMLResponse)
    async def claims(request: Request, offset: int = 0):
        session = session_of(request, "claims")
        listed, down, refused = await one(session, "warranty", "/claims",
                                          {"status": "needs_review", "limit": 50, "offset": max(0, offset)})
        return render(request, session, "claims.html", {"page": "claims", "claims": listed, "down": down,
                                                        "refused": refused, "offset": max(0, offset)})

    # --- system ---

    async def system_report() -> dict:
        from serialtrack.status import Thresholds, evaluate, gather

        try:
            redis_url = settings.resolve_redis_url("operator-reader")
        except NoRedisConfigured as exc:
            return {"error": str(exc)}
        report = await gather(settings, redis_url)
        report["services"] = {name: {**s, "url": backend.urls.get(name, s["url"])}
                              for name, s in report["services"].items()}
        return evaluate(report, Thresholds())

    @app.get("/system", response_class=HTMLResponse)
    async def system(request: Request):
        session = session_of(request, "system")
        return render(request, session, "system.html", {"page": "system", "report": await system_report()})

    @app.get("/system/panel", response_class=HTMLResponse)
    async def system_panel(request: Request):
        session = session_of(request, "system")
        return render(request, session, "system_panel.html", {"report": await system_report()})

    return app


STATUSES = ("quarantined", "in_stock_not_quarantined", "sold_owner_notified", "sold_owner_unknown",
            "sold_awaiting_owner", "remedied", "unknown")
