"""An example application that logs through the logpipe chain.

``logpipe demo`` runs it: an order service handling a few requests inside
OpenTelemetry spans, with structured fields, Chinese text, an error and an
exception, so every part of the KafkaLog record shows up in the output.
"""

from __future__ import annotations

import structlog
from opentelemetry import trace

__all__ = ["run"]


class PaymentDeclined(Exception):
    """Raised by the fake payment gateway."""


def charge(order_id: str, amount: float) -> None:
    if amount > 100:
        raise PaymentDeclined(f"card declined for order {order_id}: amount {amount} over limit")


def handle_order(order_id: str, amount: float) -> None:
    log = structlog.get_logger().bind(order_id=order_id)
    tracer = trace.get_tracer("logpipe.demo")
    with tracer.start_as_current_span("handle_order"):
        log.info("订单已创建 order created", amount=amount, items=["book", "pen"], action="create")
        try:
            charge(order_id, amount)
        except PaymentDeclined:
            log.exception("payment failed", action="pay")
            return
        log.info("payment accepted 支付成功 ✅", amount=amount, action="pay")


def run(orders: int = 3) -> int:
    """Log a few orders; returns how many log calls were made."""
    log = structlog.get_logger()
    log.info("demo starting", orders=orders)
    calls = 1
    for n in range(orders):
        amount = 40.0 * (n + 1)
        handle_order(f"A-{n + 1:04d}", amount)
        calls += 2
    log.warning("inventory low", sku="pen", left=3)
    log.error("upstream timeout", service="inventory", timeout_s=2.5)
    return calls + 2
