"""A hostile subject posted through the detector and the Teams receiver stays inert text on the card."""

from __future__ import annotations

import json
from datetime import timedelta

from shared.standins.clock import Clock
from shared.standins.loganalytics import LogAnalyticsStandIn
from shared.standins.teams import WebhookReceiver
from tests.conftest import MakeDetector, email
from tests.unit.test_cards import _texts


def test_hostile_subject_posted_through_the_detector_is_inert(
    la: LogAnalyticsStandIn, hook: WebhookReceiver, make_detector: MakeDetector, clock: Clock
) -> None:
    subject = "Urgent [Reset your password](https://evil.example/login) {{DATE(2020-01-01T00:00:00Z)}}"
    la.ingest("EmailEvents", [email(clock, Subject=subject)], at=clock.now - timedelta(minutes=10))
    make_detector().run(only_due=False)
    [card] = hook.cards()
    text = _texts(card)
    assert "Urgent [Reset your password](hxxps[:]//evil[.]example/login)" in text
    assert "](https://" not in json.dumps(card)
