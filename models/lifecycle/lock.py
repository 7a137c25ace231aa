"""The promotion lock: a Prefect global concurrency limit of one slot per registered model.

Held by every alias move (``rtml.models.lifecycle.aliases``), so promotions, rollbacks and bootstraps
from any machine that talks to the same Prefect API are serialised. The limit
``rtml-promotion-<model>`` is created (limit 1, active) on first use and repaired if someone changed
it. A slot is a lease: a process killed while holding it frees it when the lease runs out
(:data:`LEASE_S`, Prefect's minimum). Prefect unreachable or the lock busy past
``promotion.lock_timeout_s`` fail the move with a one-line error: never a move without the lock.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

from rtml.infra.config.settings import Settings
from rtml.models.lifecycle.audit import LifecycleError

LEASE_S = 60.0  # Prefect accepts 60 s .. 1 day; renewed in the background while held
_BANNED = "/%&><"


def lock_name(model_name: str) -> str:
    """The global concurrency limit of a model (Prefect names may not hold ``/ % & > <``).

    >>> lock_name("rtml-fraud"), lock_name("team/fraud")[:26]
    ('rtml-promotion-rtml-fraud', 'rtml-promotion-team_fraud-')
    """
    clean = "".join("_" if ch in _BANNED else ch for ch in model_name)
    if clean != model_name:
        clean += "-" + hashlib.sha1(model_name.encode()).hexdigest()[:8]
    return f"rtml-promotion-{clean}"


def ensure_limit(name: str) -> None:
    """Create the one-slot limit, or set an existing one back to one active slot."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1, active=True, slot_decay_per_second=0.0)
                )
                return
            except ObjectAlreadyExists:  # another process created it first
                limit = client.read_global_concurrency_limit_by_name(name)
        if limit.limit != 1 or not limit.active or limit.slot_decay_per_second:
            client.update_global_concurrency_limit(
                name, GlobalConcurrencyLimitUpdate(limit=1, active=True, slot_decay_per_second=0.0)
            )


@contextlib.contextmanager
def promotion_lock(settings: Settings) -> Iterator[None]:
    """Hold the model's promotion slot for the body; LifecycleError when it cannot be had."""
    from prefect.concurrency.asyncio import (
        AcquireConcurrencySlotTimeoutError,
        ConcurrencySlotAcquisitionError,
    )
    from prefect.concurrency.sync import concurrency

    from rtml.infra.config.clients import prefect_api

    name = lock_name(settings.mlflow.model_name)
    timeout = settings.promotion.lock_timeout_s
    with prefect_api(settings), contextlib.ExitStack() as held:
        try:
            ensure_limit(name)
            held.enter_context(
                concurrency(
                    name,
                    occupy=1,
                    timeout_seconds=timeout,
                    lease_duration=LEASE_S,
                    strict=True,  # a missing limit is an error, never "no lock"
                    raise_on_lease_renewal_failure=False,  # never cut a move in half
                )
            )
        except AcquireConcurrencySlotTimeoutError:
            raise LifecycleError(
                f"promotion lock '{name}' still busy after {timeout:g} s "
                "(another promotion is running, or one died and its lease has not expired)"
            ) from None
        except (ConcurrencySlotAcquisitionError, OSError) as exc:
            raise LifecycleError(f"promotion lock '{name}' unavailable: {_why(exc)}") from None
        except Exception as exc:  # noqa: BLE001 - httpx/Prefect errors: one line, and no move
            raise LifecycleError(
                f"promotion lock '{name}' unavailable (Prefect API {settings.prefect_api_url}): {_why(exc)}"
            ) from None
        yield


def _why(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:200]
