"""Periodic jobs of the flood context (registered with cityops.core.jobs).

``flood.proposals`` evaluates the proposal rules (rainfall windows, ponding depths) on the
gauges every minute and records a proposal for the commander when the rules ask for more
than the active response level. Idempotent at an instant: a proposal is not recorded twice
(a pending one for the same or a higher level suppresses it).

``flood.overdue`` notifies the issuer and the receiver of an order not acknowledged by its
due time (签收超时), once per order (the notification's dedupe key).
"""

from __future__ import annotations

from datetime import timedelta

from cityops.core.jobs import register
from cityops.flood.service import flag_overdue, run_proposals

PROPOSALS_EVERY = timedelta(minutes=1)
OVERDUE_EVERY = timedelta(minutes=1)

register("flood.proposals", PROPOSALS_EVERY, run_proposals)
register("flood.overdue", OVERDUE_EVERY, flag_overdue)
