import numpy as np
import pytest

from thresher.models.harm_tau import evaluate, sweep_tau, valley_tau


def test_evaluate_counts_harmful_as_below_tau():
    result = evaluate(positives=[10, 20, 300], negatives=[100, 200, 400], tau=150)
    assert result["precision"] == pytest.approx(2 / 3)  # flagged: 10, 20, 100
    assert result["recall"] == pytest.approx(2 / 3)
    assert result["macro_f1"] == pytest.approx(2 / 3)


def test_sweep_finds_the_separating_tau():
    rng = np.random.default_rng(0)
    harmful = list(10 ** rng.normal(1.5, 0.1, 200))
    clean = list(10 ** rng.normal(3.0, 0.1, 200))
    result = sweep_tau(harmful, clean)
    assert result["macro_f1"] == 1.0 and max(harmful) < result["tau"] <= min(clean)
    assert result["candidates"] == 100


def test_valley_between_two_modes():
    rng = np.random.default_rng(1)
    scores = list(10 ** rng.normal(1.5, 0.15, 300)) + list(10 ** rng.normal(3.0, 0.2, 700))
    tau = valley_tau(scores)
    assert 10 ** 1.9 < tau < 10 ** 2.6


def test_valley_refuses_a_single_mode():
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match="single mode"):
        valley_tau(list(10 ** rng.normal(2.0, 0.05, 1000)), bins=10)


def test_card_sits_next_to_the_model_whatever_its_suffix():
    from thresher.models.harm_tau import card_path

    assert card_path("/m/es.arpa.bin").as_posix() == "/m/es.tau.json"
    assert card_path("/m/es.binary").as_posix() == "/m/es.tau.json"
    assert card_path("/m/adult_es.arpa").as_posix() == "/m/adult_es.tau.json"
