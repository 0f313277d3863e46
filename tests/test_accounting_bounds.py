"""Accounting has bounded time and memory, and says when an accountant gives no finite answer.

Tiny noise multipliers span a huge privacy-loss range: PLD's and PRV's grids used to grow to
tens of GB (and PRV overflowed to inf) while RDP answered at once. Each case runs in its own
process so that its peak memory can be read back.
"""
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from federated.cli import main
from privacy.accountants import EVERY_ROUND, NUMERIC_LIMIT, PLD_DISCRETIZATION, Sampling, epsilon, limit_note
from tests.conftest import TINY
from tests.test_accounting import gdp_epsilon
from utils import io

ROOT = Path(__file__).resolve().parents[1]
CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from privacy.accountants import EVERY_ROUND, Sampling, epsilon, limit_note
z, rounds, q, relation = float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
sampling = EVERY_ROUND if q == 1 else Sampling("poisson", q, 20, round(20 * q))
history = [(z, q)] * rounds
out = {}
start = time.perf_counter()
for acc in ("rdp", "pld", "prv"):
    eps = epsilon(history, delta=1e-3, accountant=acc, sampling=sampling, relation=relation)
    note = limit_note(history, delta=1e-3, accountant=acc, sampling=sampling, relation=relation)
    out[acc] = {"epsilon": str(eps), "note": note}
out["seconds"] = time.perf_counter() - start
out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def account_in_child(z, rounds, q=1.0, relation="add_remove"):
    done = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), str(z), str(rounds), str(q), relation],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


# (0.042, 3): the noise --epsilon 1000 calibrates for the tiny federation below
@pytest.mark.parametrize("z, rounds, q", [(0.01, 2, 1.0), (0.01, 40, 1.0), (0.042, 3, 1.0), (0.05, 1, 1.0),
                                          (0.25, 40, 1.0), (0.02, 40, 0.5)])
def test_tiny_noise_is_accounted_within_seconds_and_1_gb(z, rounds, q):
    out = account_in_child(z, rounds, q)
    assert out["seconds"] < 20 and out["peak_mb"] < 1024, out
    rdp = float(out["rdp"]["epsilon"])
    assert math.isfinite(rdp)
    if q == 1:  # a composition of Gaussians is one Gaussian: the exact epsilon is a closed form
        exact = gdp_epsilon(math.sqrt(rounds) / z, 1e-3)
        assert exact <= rdp <= 1.2 * exact + 1
    for acc in ("pld", "prv"):
        eps = float(out[acc]["epsilon"])
        if math.isfinite(eps):
            if q == 1:
                assert exact - 1e-6 <= eps <= exact * 1.001 + 0.05, (acc, eps, exact)
        else:  # no finite answer only with a reason, and only where RDP's own bound is beyond the limit
            assert rdp > NUMERIC_LIMIT and "not computed" in out[acc]["note"], out


def test_numerical_accountants_answer_below_the_limit():
    out = account_in_child(0.25, 40)  # RDP ~ 420: both numerical accountants give the tight value
    exact = gdp_epsilon(math.sqrt(40) / 0.25, 1e-3)
    for acc in ("pld", "prv"):
        assert float(out[acc]["epsilon"]) == pytest.approx(exact, rel=2e-3)


def test_coarsened_grid_is_said_and_stays_an_upper_bound():
    """A composition of small-noise releases (amplified, so not folded into one Gaussian)."""
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant

    poisson = Sampling("poisson", 0.5, 20, 10)
    history = [(0.05, 0.5)] * 2
    note = limit_note(history, delta=1e-3, accountant="pld", sampling=poisson)
    assert note is not None and "coarsened" in note
    eps = epsilon(history, delta=1e-3, accountant="pld", sampling=poisson)
    fine = pld_privacy_accountant.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    fine.compose(dp_accounting.PoissonSampledDpEvent(0.5, dp_accounting.GaussianDpEvent(0.05)), 2)
    assert fine.get_epsilon(1e-3) - 1e-9 <= eps <= fine.get_epsilon(1e-3) + 0.05


def test_widened_prv_error_is_said_and_stays_an_upper_bound():
    sampling = Sampling("poisson", 0.1, 20, 2)
    history = [(0.5, 0.1)] * 1000
    note = limit_note(history, delta=1e-3, accountant="prv", sampling=sampling)
    assert note is not None and "widened" in note
    prv = epsilon(history, delta=1e-3, accountant="prv", sampling=sampling)
    pld = epsilon(history, delta=1e-3, accountant="pld", sampling=sampling)
    assert pld <= prv <= pld + 0.2


def test_ordinary_noise_has_no_limit_note():
    for acc in ("rdp", "pld", "prv"):
        assert limit_note([(1.0, 1.0)] * 40, delta=1e-3, accountant=acc, sampling=EVERY_ROUND) is None


@pytest.mark.parametrize("flags", [["--noise_multiplier", "0.01"], ["--epsilon", "1000"]])
def test_a_run_with_tiny_noise_finishes_and_says_what_is_not_finite(flags, tmp_path):
    start = time.perf_counter()
    assert main(TINY + ["--mode", "dpsgd", "--save_path", str(tmp_path)] + flags) == 0
    assert time.perf_counter() - start < 60
    summary = io.read_json(next(tmp_path.rglob("summary.json")))
    for unit in ("hospital", "subclient", "patient"):
        eps = summary["privacy"]["epsilon"][unit]
        assert math.isfinite(eps["rdp"]) and math.isinf(eps["pld"]) and math.isinf(eps["prv"])
    notes = summary["privacy_report"]["notes"]
    assert any(n.startswith("pld: not computed") for n in notes) and any(n.startswith("prv: not computed") for n in notes)


def test_rdp_is_always_computed_and_noise_free_releases_get_no_limit_note():
    assert limit_note([(0.01, 1.0)] * 2, delta=1e-3, accountant="rdp", sampling=EVERY_ROUND) is None
    for z in (0.0, 1e-320):  # no guarantee at all: said by the report's coverage, not as a numerical limit
        assert limit_note([(z, 1.0)], delta=1e-3, accountant="pld", sampling=EVERY_ROUND) is None


def test_pld_grid_of_the_patient_unit_reads_the_replace_one_multiplier():
    """Poisson replace-one is the one pair where PLD amplifies and RDP cannot: the grid is
    sized for PLD's own reading of the multiplier (twice RDP's), 20 / (2 z) nats wide."""
    poisson = Sampling("poisson", 0.5, 20, 10)
    note = limit_note([(0.045, 0.5)], delta=1e-3, accountant="pld", sampling=poisson, relation="replace")
    assert note == "pld: grid step coarsened to 0.00111 (noise this small spans a wide loss range); an upper bound"


def test_amplified_releases_are_checked_against_the_amplified_bound():
    """Poisson add/remove: the limit reads RDP's amplified bound, so a release that is cheap
    once subsampled is computed even though its unsampled epsilon is far beyond the limit."""
    poisson = Sampling("poisson", 0.01, 100, 1)
    history = [(0.1, 0.01)] * 10
    assert epsilon([(0.1, 1.0)] * 10, delta=1e-3, accountant="rdp", sampling=EVERY_ROUND) > NUMERIC_LIMIT
    for acc in ("pld", "prv"):
        assert math.isfinite(epsilon(history, delta=1e-3, accountant=acc, sampling=poisson))


def test_pld_uses_the_grid_its_note_states():
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant
    from privacy.accountants import _PLD_LOSS_SPAN, PLD_MAX_POINTS
    poisson = Sampling("poisson", 0.5, 20, 10)
    step = _PLD_LOSS_SPAN / (2 * 0.045) / PLD_MAX_POINTS
    acc = pld_privacy_accountant.PLDAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE,
                                               value_discretization_interval=step)
    acc.compose(dp_accounting.PoissonSampledDpEvent(0.5, dp_accounting.GaussianDpEvent(2 * 0.045)))
    ours = epsilon([(0.045, 0.5)], delta=1e-3, accountant="pld", sampling=poisson, relation="replace")
    assert ours == pytest.approx(acc.get_epsilon(1e-3), rel=1e-12)


def test_widened_prv_error_is_part_of_the_reported_bound():
    sampling = Sampling("poisson", 0.1, 20, 2)
    history = [(0.5, 0.1)] * 1000
    note = limit_note(history, delta=1e-3, accountant="prv", sampling=sampling)
    widened = float(note.split("widened to ")[1].split()[0])
    prv = epsilon(history, delta=1e-3, accountant="prv", sampling=sampling)
    pld = epsilon(history, delta=1e-3, accountant="pld", sampling=sampling)
    assert prv - pld >= 0.8 * widened > 0.8 * 0.01  # Opacus adds the error it was given to its estimate


def test_one_plain_gaussian_uses_a_small_grid_and_stays_within_1e_3_of_the_closed_form():
    """Folded q = 1 histories are one Gaussian: its pessimistic grid's error does not
    compound over compositions, so PLD_ONE_RELEASE_POINTS points keep it within 1e-3 of
    the exact (mu-GDP) epsilon, at a tenth of the time; no coarsening note is due."""
    import dp_accounting
    from dp_accounting.pld import pld_privacy_accountant
    from privacy.accountants import _PLD_LOSS_SPAN, PLD_ONE_RELEASE_POINTS
    from tests.test_accounting import gdp_epsilon

    for z in (0.05, 0.16, 0.5):
        history = [(z * 10, 1.0)] * 100  # folds to multiplier z
        ours = epsilon(history, delta=1e-2, accountant="pld", sampling=EVERY_ROUND)
        assert gdp_epsilon(1 / z, 1e-2) <= ours <= gdp_epsilon(1 / z, 1e-2) + 1e-3
        step = max(PLD_DISCRETIZATION, _PLD_LOSS_SPAN / z / PLD_ONE_RELEASE_POINTS)
        acc = pld_privacy_accountant.PLDAccountant(value_discretization_interval=step)
        acc.compose(dp_accounting.GaussianDpEvent(z))
        assert ours == pytest.approx(acc.get_epsilon(1e-2), rel=1e-9)
        assert limit_note(history, delta=1e-2, accountant="pld", sampling=EVERY_ROUND) is None


def test_pld_of_a_history_with_revealed_releases_uses_the_grid_its_note_states():
    """A sampled replace-one release beside a revealed one: the grid is sized by the sampled
    release's PLD reading (2 z), and the note states that step (dp-accounting called directly)."""
    from dp_accounting import NeighboringRelation
    from dp_accounting.pld import privacy_loss_distribution as pld_lib
    poisson = Sampling("poisson", 0.5, 20, 10)
    history = [(0.045, 0.5, "sampled"), (1.0, 0.5, "revealed")]
    note = limit_note(history, delta=1e-3, accountant="pld", sampling=poisson, relation="replace")
    step = float(note.split("coarsened to ")[1].split()[0])
    assert step == pytest.approx(0.00111, abs=1e-5)
    from privacy.accountants import _PLD_LOSS_SPAN, PLD_MAX_POINTS
    exact_step = _PLD_LOSS_SPAN / (2 * 0.045) / PLD_MAX_POINTS
    sampled = pld_lib.from_gaussian_mechanism(standard_deviation=2 * 0.045, value_discretization_interval=exact_step,
                                              sampling_prob=0.5, neighboring_relation=NeighboringRelation.REPLACE_ONE)
    revealed = pld_lib.from_gaussian_mechanism(standard_deviation=1.0, value_discretization_interval=exact_step)
    revealed = revealed.compute_mixture(pld_lib.identity(exact_step), 0.5)
    expected = sampled.compose(revealed).get_epsilon_for_delta(1e-3)
    ours = epsilon(history, delta=1e-3, accountant="pld", sampling=poisson, relation="replace")
    assert ours == pytest.approx(expected, rel=1e-12)
