"""The dashboard's web defences that need no state (pure): response headers, the cross-site
check of state-changing requests, and the session cookie's attributes.

Three layers stop a cross-site request from acting with an admin's session:

1. the session cookie is ``SameSite=Strict``: browsers do not send it on requests that
   another *site* starts;
2. every state-changing request must come from the dashboard's own *origin*
   (:func:`cross_origin_problem`): ``Sec-Fetch-Site`` must be ``same-origin`` (or ``none``,
   a user's own action) and ``Origin``, when sent, must be ours. This also refuses a page of
   the same site on another port or subdomain, which SameSite lets through;
3. it must carry the session's CSRF token (:mod:`kernelfleet.dashboard.session`) in the
   ``X-CSRF-Token`` header or the ``_csrf`` form field, which a page of another origin cannot
   read.

Requests authenticated with an ``Authorization`` header instead of the cookie (scripts) need
none of this: a browser never adds that header on its own.
"""

from __future__ import annotations

from collections.abc import Mapping

#: Methods that change something: they need the origin check and the CSRF token.
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

#: No inline script or style anywhere: scripts and styles come from the dashboard's own files.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ]
)

SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}

SESSION_COOKIE = "kf_admin_session"
LOGIN_COOKIE = "kf_admin_login"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "_csrf"


def own_origin(protocol: str, host: str) -> str:
    """The dashboard's origin as browsers send it in ``Origin``: ``http://127.0.0.1:8888``."""
    return f"{protocol.lower()}://{host.lower()}"


def cross_origin_problem(headers: Mapping[str, str], origin: str) -> str | None:
    """Why a state-changing request does not come from *origin*'s own pages, or None.

    Our pages are served with ``Referrer-Policy: no-referrer``, under which browsers send
    ``Origin: null`` on their own POSTs: "null" passes only beside ``Sec-Fetch-Site:
    same-origin``, which pages cannot forge (a sandboxed frame elsewhere also says "null", but
    never "same-origin"). A request without either header (a script with the cookie) is left
    to the CSRF token.
    """
    site = headers.get("Sec-Fetch-Site")
    site = site.strip().lower() if site is not None else None
    if site is not None and site not in {"same-origin", "none"}:
        return (
            f"a request from another site or origin (Sec-Fetch-Site: {site[:40]}) may not "
            "change anything here; use the dashboard's own pages"
        )
    sent = headers.get("Origin")
    sent = sent.strip().lower() if sent is not None else None
    if sent == "null" and site == "same-origin":
        return None
    if sent is not None and sent != origin:
        return (
            f"a request from {sent[:100]!r} may not change anything here; only the dashboard's "
            f"own pages ({origin}) may"
        )
    return None


def cookie_attributes(*, path: str, secure: bool, max_age: int | None) -> dict[str, object]:
    """tornado ``set_cookie`` keywords of the dashboard's cookies: HttpOnly, SameSite=Strict,
    limited to the dashboard's path, Secure on HTTPS."""
    attrs: dict[str, object] = {"path": path, "httponly": True, "samesite": "Strict"}
    if secure:
        attrs["secure"] = True
    if max_age is not None:
        attrs["max_age"] = max_age
    return attrs
