"""Stock JupyterLab offers each user exactly the kernelspec x profile pairs allowed to them.

Two JupyterLab servers on one gateway, as a notebook server acting for alice and one for bob
(``KERNEL_USERNAME``, which jupyter_server sends as ``?user=`` when it lists kernelspecs).
alice may use the ``small`` profile only, bob ``small`` and ``large``: each launcher shows
those tiles and no others, and a kernel started from one runs with its profile.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.browser.harness import BROWSER, LAB, Browser, PrivateNetwork, running_servers

pytestmark = BROWSER

GATEWAY_ENV = {
    "KF_PROFILES": json.dumps(
        {"small": {"memory": "1G", "cpus": 1}, "large": {"memory": "4G", "cpus": 2}}
    ),
    "KF_ALLOWANCES": json.dumps(
        {"default": {"profiles": ["small"]}, "users": {"bob": {"profiles": ["small", "large"]}}}
    ),
}


async def test_each_jupyterlab_user_sees_only_their_allowed_profiles(
    world: dict[str, str], network: PrivateNetwork, tmp_path: Path, chromium: Browser
) -> None:
    for user, expected in (
        ("alice", ["Python 3 — small (1 GiB, 1 CPU)"]),
        ("bob", ["Python 3 — large (4 GiB, 2 CPU)", "Python 3 — small (1 GiB, 1 CPU)"]),
    ):
        run_dir = tmp_path / user
        run_dir.mkdir()
        env = dict(world, KERNEL_USERNAME=user)
        async with running_servers(LAB, env, network, run_dir, GATEWAY_ENV) as servers:
            lab = servers.frontend
            page, expect = chromium.page, chromium.expect
            # what the picker reads: the notebook server's own kernelspec list (the servers
            # are in the browser's private network, so the browser fetches it)
            await page.goto(f"{lab.url}/api/kernelspecs")
            listed = json.loads(await page.locator("body").inner_text())["kernelspecs"]
            assert sorted(n for n in listed if n.startswith("python3")) == sorted(
                f"python3--{label.split(' — ')[1].split()[0]}" for label in expected
            )
            await page.goto(f"{lab.url}/lab")
            cards = page.locator(
                ".jp-LauncherCard[data-category='Notebook'] .jp-LauncherCard-label"
            )
            await expect(cards.first).to_be_visible(timeout=60_000)
            labels = sorted(t.strip() for t in await cards.all_inner_texts())
            assert [t for t in labels if t.startswith("Python 3")] == expected
            await chromium.screenshots(f"profiles-launcher-{user}")
