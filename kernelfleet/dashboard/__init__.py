"""The admin dashboard at ``<base_url>admin``: overview, kernels, kernelspecs (issue 14).

It sits above both the gateway and :mod:`kernelfleet.specs` (it serves pages through the
gateway's tornado app and installs kernelspecs through the installer), so neither of them
imports it: ``kernelfleet serve`` calls :func:`kernelfleet.dashboard.app.install`, which adds
the dashboard's routes to the gateway's route providers (tests do the same).

Modules, one concern each:

- :mod:`.settings`: the options (``KF_DASHBOARD_*``);
- :mod:`.session` and :mod:`.guard`: the pure security parts: signed sessions, CSRF tokens,
  the Origin / Sec-Fetch-Site check and the response headers (CSP);
- :mod:`.web`: the base handler (authentication, CSRF, headers, templates, errors);
- :mod:`.pages` and :mod:`.actions`: the HTML pages and the JSON / server-sent-event endpoints;
- :mod:`.views`, :mod:`.hosts`, :mod:`.live`: what the pages show (kernel rows, host health)
  and how it reaches the browser live (server-side diffs pushed as server-sent events);
- :mod:`.specform` and :mod:`.specjobs`: the kernelspec form (pure parsing and validation) and
  the install + sync job with its progress;
- :mod:`.envform` and :mod:`.envpages`: kernel environments (when the gateway serves them):
  the form (pure), the list with usage against the quota, and a build's live progress;
- :mod:`.app`: the wiring.

Front end: server-rendered Jinja2 templates (autoescaped) and one small plain JavaScript file,
no build step and no CDN (see the README, "Admin dashboard").
"""
