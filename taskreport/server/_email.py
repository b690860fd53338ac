"""Email deliveries: recipients parsed as mail software parses them, checked one by one against the server's
allowed domains, and sent to exactly the addresses that were checked."""

from __future__ import annotations

import email.message
import smtplib
import ssl
from collections.abc import Iterable
from typing import Any

from .._validation import parse_recipients
from ._settings import SmtpSettings
from ._webhook import DeliveryError


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().lower().rstrip(".")


def refused(addresses: Iterable[str], allowed: frozenset[str] | None) -> list[str]:
    if allowed is None:
        return []
    return [a for a in addresses if domain_of(a) not in allowed]


def send_email(smtp: SmtpSettings, to: Any, subject: str, text: str, allowed: frozenset[str] | None) -> None:
    """Send ``text`` to every address of ``to``, or to none of them (DeliveryError) when any is refused."""
    try:
        recipients = parse_recipients(to)
    except ValueError as exc:
        raise DeliveryError(f"invalid recipients: {exc}", retry=False) from None
    outside = refused(recipients, allowed)
    if outside:
        # the whole message or nothing: a partial send would hide which recipients were dropped
        raise DeliveryError(
            f"email to {', '.join(outside)} refused: not in the server's email domains "
            "(taskreport serve --email-domains)",
            retry=False,
        )
    message = email.message.EmailMessage()
    message["From"] = smtp.sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message.set_content(text)
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout) as client:
            if smtp.starttls:
                client.starttls(context=ssl.create_default_context())
            if smtp.username:
                client.login(smtp.username, smtp.password or "")
            # the envelope is the checked list itself, never re-read from the header
            client.send_message(message, to_addrs=recipients)
    except smtplib.SMTPRecipientsRefused as exc:
        raise DeliveryError(f"SMTP server refused the recipients: {exc}", retry=False) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(f"SMTP: {type(exc).__name__}: {exc}") from None
