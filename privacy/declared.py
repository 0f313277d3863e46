"""The ledger's entries: each charge declared as a dp-accounting `DpEvent` with its sampling.

An account is charged Gaussian releases (privacy/accountants.py's `Release`: multiplier,
rate, kind). Declared as events they read as dp-accounting writes them:

- released every round (rate 1):          GaussianDpEvent(z)
- "sampled", Poisson sampling:            PoissonSampledDpEvent(q, GaussianDpEvent(z))
- "sampled", m of n without replacement:  SampledWithoutReplacementDpEvent(n, m, GaussianDpEvent(z))
- "revealed":                             RevealedSampledDpEvent(q, GaussianDpEvent(z)), defined
  here: dp-accounting has no event for a unit whose participation its companions show
  (privacy/accountants.py analyses it)
- `count` equal releases:                 SelfComposedDpEvent(event, count)
- a release that is (xi, rho)-zCDP:       ZCDpEvent(rho, xi), e.g. distributed Skellam noise
  (privacy/secagg/skellam.py); RDP reads it exactly, PLD and PRV have no analysis of it

z is in RDP's reading (noise std / neighbouring distance). The account's neighbouring
relation completes the description: dp-accounting takes it from the accountant, not from
the event. Events are stored as plain dicts (checkpoints are loaded weights_only, journals
are JSON), and only dp-accounting's event classes and this module's are rebuilt from them.
"""
from __future__ import annotations

import collections
import importlib
from itertools import groupby

import attr
import dp_accounting

from privacy.accountants import KINDS, Release, Sampling


@attr.s(frozen=True, slots=True, auto_attribs=True)
class RevealedSampledDpEvent(dp_accounting.DpEvent):
    """`event` released with probability `sampling_probability`, otherwise an outcome the
    same on both neighbouring datasets and distinguishable from the release: the unit's
    companions show whether it took part, so the sampling hides nothing."""
    sampling_probability: float
    event: dp_accounting.DpEvent


def event_of(release: Release, sampling: Sampling) -> dp_accounting.DpEvent:
    """The event of one release of an account that samples by `sampling`."""
    z, q, kind = Release(*release)
    if kind not in KINDS:
        raise ValueError(f"unknown release kind {kind!r}; choose one of {KINDS}")
    gaussian = dp_accounting.GaussianDpEvent(float(z))
    if q >= 1:
        return gaussian
    if kind == "revealed":
        return RevealedSampledDpEvent(float(q), gaussian)
    if sampling.kind == "poisson":
        return dp_accounting.PoissonSampledDpEvent(float(q), gaussian)
    if sampling.kind == "fixed" and q == sampling.sample_size / sampling.population:
        return dp_accounting.SampledWithoutReplacementDpEvent(sampling.population, sampling.sample_size, gaussian)
    raise ValueError(f"a release sampled with probability {q:g} cannot come from {_sampling_words(sampling)}")


def _sampling_words(sampling: Sampling) -> str:
    if sampling.kind == "fixed":
        return f"fixed-size sampling draws {sampling.sample_size} of {sampling.population}"
    return f"{sampling.kind!r} sampling"


def releases_of(event: dp_accounting.DpEvent) -> list[Release]:
    """The Gaussian releases `event` composes, in order, as privacy/accountants.py reads them."""
    return [p for p in parts_of(event) if isinstance(p, Release)]


def zcdp_of(event: dp_accounting.DpEvent) -> list[dp_accounting.ZCDpEvent]:
    """The zCDP releases `event` composes."""
    return [p for p in parts_of(event) if isinstance(p, dp_accounting.ZCDpEvent)]


def parts_of(event: dp_accounting.DpEvent) -> list[Release | dp_accounting.ZCDpEvent]:
    """Every release `event` composes, in order: a Gaussian as a `Release`, a zCDP release as its event."""
    if isinstance(event, dp_accounting.SelfComposedDpEvent):
        return parts_of(event.event) * event.count
    if isinstance(event, dp_accounting.ComposedDpEvent):
        return [r for e in event.events for r in parts_of(e)]
    if isinstance(event, dp_accounting.ZCDpEvent):
        return [event]
    if isinstance(event, dp_accounting.GaussianDpEvent):
        return [Release(event.noise_multiplier, 1.0)]
    inner = getattr(event, "event", None)
    if isinstance(inner, dp_accounting.GaussianDpEvent):
        z = inner.noise_multiplier
        if isinstance(event, dp_accounting.PoissonSampledDpEvent):
            return [Release(z, event.sampling_probability)]
        if isinstance(event, dp_accounting.SampledWithoutReplacementDpEvent):
            return [Release(z, event.sample_size / event.source_dataset_size)]
        if isinstance(event, RevealedSampledDpEvent):
            return [Release(z, event.sampling_probability, "revealed")]
    raise ValueError(f"the ledger's accountants analyse (sampled) Gaussian and zCDP releases; "
                     f"{type(event).__name__} is not one of them")


# --- plain form, for checkpoints and journals ---------------------------------------------
KNOWN_MODULES = ("dp_accounting.dp_event", __name__)


def to_plain(event: dp_accounting.DpEvent) -> dict:
    """`event` as nested dicts, lists and numbers (dp-accounting's own named-tuple form)."""
    return _plain(event.to_named_tuple())


def _plain(value):
    if hasattr(value, "_asdict"):
        return {k: _plain(v) for k, v in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def from_plain(plain: dict) -> dp_accounting.DpEvent:
    """The event `to_plain` wrote; refuses any class that is not a known event class
    (a checkpoint must not make this process import arbitrary code)."""
    return dp_accounting.DpEvent.from_named_tuple(_named(plain))


def _named(value):
    if isinstance(value, dict):
        where = f"{value.get('module_name')}.{value.get('class_name')}"
        known = value.get("module_name") in KNOWN_MODULES and \
            getattr(importlib.import_module(value["module_name"]), str(value.get("class_name")), None)
        if not (isinstance(known, type) and issubclass(known, dp_accounting.DpEvent)):
            raise ValueError(f"a stored privacy event names {where}, which is not an event class this "
                             "repository reads; the checkpoint or journal was not written by it")
        fields = {k: _named(v) for k, v in value.items()}
        return collections.namedtuple("StoredDpEvent", list(fields))(**fields)
    if isinstance(value, list):
        return [_named(v) for v in value]
    return value


# --- readable form, for the report ----------------------------------------------------------
def short(event: dp_accounting.DpEvent) -> str:
    """One event in a line: Gaussian(z=..), PoissonSampled(q=.., ...), ..."""
    if isinstance(event, dp_accounting.GaussianDpEvent):
        return f"Gaussian(z={event.noise_multiplier:.6g})"
    if isinstance(event, (dp_accounting.PoissonSampledDpEvent, RevealedSampledDpEvent)):
        name = type(event).__name__.removesuffix("DpEvent")
        return f"{name}(q={event.sampling_probability:.6g}, {short(event.event)})"
    if isinstance(event, dp_accounting.SampledWithoutReplacementDpEvent):
        return f"SampledWithoutReplacement({event.sample_size} of {event.source_dataset_size}, {short(event.event)})"
    if isinstance(event, dp_accounting.SelfComposedDpEvent):
        return f"{event.count} x {short(event.event)}"
    if isinstance(event, dp_accounting.ZCDpEvent):
        return f"ZCDp(rho={event.rho:.6g}, xi={event.xi:.6g})"
    return repr(event)


def describe(events: list[dp_accounting.DpEvent]) -> list[str]:
    """An account's events in order, runs of equal ones counted: ["12 x PoissonSampled(...)"]."""
    out = []
    for event, run in groupby(events):
        n = len(list(run))
        out.append(short(event) if n == 1 else f"{n} x {short(event)}")
    return out
