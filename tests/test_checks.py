"""The assignment checkers: the solutions pass, typical mistakes fail the right check.

The reference solutions are taken from the solution notebooks themselves (their solution cells
are executed here), so the tests check the checkers against the very code the notebooks release.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from coinfer import game, metrics
from coinfer.assignments import checks
from coinfer.costs import LinkModel, SplitCost
from coinfer.data import to_float
from coinfer.game import Market

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "book" / "assignments" / "solutions"

#: checker -> (notebook, the function its check cell passes)
CHECKERS = {
    "check_split_model": ("a1_coinference", "split_model"),
    "check_sent_bytes": ("a1_coinference", "sent_bytes"),
    "check_latency": ("a1_coinference", "latency"),
    "check_fastest_per_bandwidth": ("a1_coinference", "fastest_per_bandwidth"),
    "check_psnr": ("a2_spears", "psnr"),
    "check_observe": ("a2_spears", "observe"),
    "check_train_inverse": ("a2_spears", "train_inverse"),
    "check_reconstruct": ("a2_spears", "reconstruct"),
    "check_laplace_mechanism": ("a3_shields", "laplace_mechanism"),
    "check_clip": ("a3_shields", "clip"),
    "check_perturb": ("a3_shields", "perturb"),
    "check_whole_vector_epsilon": ("a3_shields", "whole_vector_epsilon"),
    "check_vehicle_utilities": ("a4_incentive", "utilities"),
    "check_best_reply": ("a4_incentive", "best_reply"),
    "check_nash": ("a4_incentive", "nash"),
    "check_sp_curve": ("a4_incentive", "sp_curve"),
}

_namespaces: dict[str, dict] = {}


def solution(notebook: str, name: str):
    """The function ``name`` as defined by the solution cells of ``notebook``."""
    if notebook not in _namespaces:
        nb = nbformat.read(SOLUTIONS / f"{notebook}.ipynb", as_version=4)
        namespace = {"np": np, "torch": torch, "nn": nn, "F": F, "copy": copy, "math": math,
                     "to_float": to_float, "LinkModel": LinkModel, "SplitCost": SplitCost,
                     "Market": Market}
        for cell in nb.cells:
            if cell.metadata.get("coinfer", {}).get("role") == "solution":
                exec(compile(cell.source, f"{notebook}:{cell.get('id')}", "exec"), namespace)
        _namespaces[notebook] = namespace
    return _namespaces[notebook][name]


def run(checker: str, fn) -> checks.TaskResult:
    return getattr(checks, checker)(fn, task="9.9", quiet=True)


def failed_checks(result: checks.TaskResult) -> set[str]:
    return {p.split(":", 1)[0] for p in result.problems}


# --------------------------------------------------------------------------------------------
# the solutions pass, the report is one deterministic line
# --------------------------------------------------------------------------------------------
def test_every_checker_is_covered_and_exported():
    exported = {n for n in checks.__all__ if n.startswith("check_")}
    assert exported == set(CHECKERS)


def test_old_location_re_exports_the_checkers():
    """``from coinfer import checks`` (older notebooks) gives the very same objects."""
    from coinfer import checks as old

    assert old.__all__ == checks.__all__
    assert all(getattr(old, n) is getattr(checks, n) for n in checks.__all__)
    assert old._image_pairs is checks._image_pairs


@pytest.mark.parametrize("checker", sorted(CHECKERS))
def test_solution_passes(checker, capsys):
    fn = solution(*CHECKERS[checker])
    result = getattr(checks, checker)(fn, task="7.1")
    out = capsys.readouterr().out
    assert result.ok, result.report()
    assert re.fullmatch(r"Task 7\.1 \([^)]+\): passed (\d+)/\1 checks\n", out), out
    assert result.total >= 4  # several inputs, edge cases included


@pytest.mark.parametrize("checker", sorted(CHECKERS))
def test_stub_is_not_implemented(checker, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError()

    result = getattr(checks, checker)(stub, task="1.1")
    out = capsys.readouterr().out
    assert result.status == "not implemented" and not result.ok
    assert out.startswith("Task 1.1 (") and out.endswith(
        "not implemented yet (stub raises NotImplementedError)\n")
    assert out.count("\n") == 1


def test_stub_called_by_the_students_function_is_named():
    def latency(cost, link):
        raise NotImplementedError()

    def fastest_per_bandwidth(costs, bandwidths, *, device_flops_per_s, edge_flops_per_s):
        return [min(costs, key=lambda c: latency(c, None)) for _ in bandwidths]

    result = checks.check_fastest_per_bandwidth(fastest_per_bandwidth, task="1.4", quiet=True)
    assert result.status == "not implemented"
    assert result.report() == ("Task 1.4 (fastest configuration): not implemented yet "
                               "(fastest_per_bandwidth calls latency, which raises "
                               "NotImplementedError)")


def test_report_is_deterministic_and_ignores_student_prints(capsys):
    reference = solution("a2_spears", "psnr")

    def chatty(a, b):
        print("debugging output", float(a.sum()))
        import warnings
        warnings.warn("a warning")
        return reference(a, b)

    checks.check_psnr(chatty, task="2.1")
    first = capsys.readouterr()
    checks.check_psnr(chatty, task="2.1")
    second = capsys.readouterr()
    assert first.out == second.out == "Task 2.1 (PSNR): passed 6/6 checks\n"
    assert first.err == second.err == ""


def test_notebook_display_shows_nothing_extra():
    result = checks.check_latency(solution("a1_coinference", "latency"), quiet=True)
    assert result._ipython_display_() is None  # IPython shows nothing: the line is printed


def test_student_exception_is_a_failed_check():
    def broken(cost, link):
        raise TypeError("unsupported operand")

    result = run("check_latency", broken)
    assert result.status == "failed" and result.passed == 0
    assert all("TypeError" in p for p in result.problems)
    assert "edge-only: broken raised TypeError: unsupported operand" in result.problems


def test_not_a_function():
    result = checks.check_psnr(42, quiet=True)
    assert not result.ok and "expected a function" in result.report()


# --------------------------------------------------------------------------------------------
# typical mistakes fail the right check — chapter 1
# --------------------------------------------------------------------------------------------
def _split_variant(*, copy_layers=False, before_relu=False, after_pool=False, validate=True):
    def split_model(model, k):
        if validate and not 1 <= k <= 6:
            raise ValueError(k)
        layers, convs = list(model), 0
        for i, layer in enumerate(layers):
            convs += isinstance(layer, nn.Conv2d)
            if convs == k and isinstance(layer, nn.Conv2d) and before_relu:
                cut = i + 1
                break
            if convs == k and isinstance(layer, nn.ReLU):
                cut = i + 1
                if after_pool and isinstance(layers[cut], nn.MaxPool2d):
                    cut += 1
                break
        device, edge = nn.Sequential(*layers[:cut]), nn.Sequential(*layers[cut:])
        return (copy.deepcopy(device), copy.deepcopy(edge)) if copy_layers else (device, edge)

    return split_model


@pytest.mark.parametrize("variant, expected", [
    (dict(copy_layers=True), {"shared parameters"}),
    (dict(before_relu=True), {"cut point"}),
    (dict(after_pool=True), {"feature shape"}),
    (dict(validate=False), {"invalid split point"}),
])
def test_split_mistakes(variant, expected):
    result = run("check_split_model", _split_variant(**variant))
    assert failed_checks(result) == expected, result.report()


def test_sent_bytes_mistakes():
    reference = solution("a1_coinference", "sent_bytes")

    def scaled_image(model, k, *, bytes_per_value=4):
        out = reference(model, k, bytes_per_value=bytes_per_value)
        return out * bytes_per_value if k == 0 else out

    def as_float(model, k, *, bytes_per_value=4):
        return float(reference(model, k, bytes_per_value=bytes_per_value))

    assert failed_checks(run("check_sent_bytes", scaled_image)) == {"edge-only (k=0)"}
    assert failed_checks(run("check_sent_bytes", as_float)) == {"return type"}


def test_latency_in_bytes_is_explained():
    def bytes_not_bits(cost, link):
        if link.bandwidth_bps <= 0:
            raise ValueError("bandwidth")
        return (cost.device_flops / link.device_flops_per_s + cost.sent_bytes / link.bandwidth_bps
                + cost.edge_flops / link.edge_flops_per_s)

    result = run("check_latency", bytes_not_bits)
    assert "units" in failed_checks(result)
    assert "8 times too small" in result.report()


def test_fastest_ties_go_to_the_first():
    latency = solution("a1_coinference", "latency")

    def last_minimum(costs, bandwidths, *, device_flops_per_s, edge_flops_per_s):
        if not costs:
            raise ValueError("empty")
        out = []
        for b in bandwidths:
            times = [latency(c, LinkModel(device_flops_per_s, edge_flops_per_s, b)) for c in costs]
            out.append(costs[len(times) - 1 - int(np.argmin(times[::-1]))])
        return out

    assert failed_checks(run("check_fastest_per_bandwidth", last_minimum)) == {"ties"}


# --------------------------------------------------------------------------------------------
# chapter 2
# --------------------------------------------------------------------------------------------
def test_psnr_with_the_wrong_peak():
    def psnr_255(a, b):
        mse = ((a.double() - b.double()) ** 2).mean(dim=(1, 2, 3)).numpy()
        if a.shape != b.shape:
            raise ValueError("shape")
        with np.errstate(divide="ignore"):
            return 10 * np.log10(255.0 ** 2 / mse)

    result = run("check_psnr", psnr_255)
    assert not result.ok
    assert "the peak of images in [0, 1] is 1, not 255" in result.report()


def test_psnr_over_the_batch_and_no_reference_values_printed():
    def batch_psnr(a, b):
        if a.shape != b.shape:
            raise ValueError("shape")
        mse = float(((a - b) ** 2).mean())
        return np.full(a.shape[0], 10 * math.log10(1 / mse))

    result = run("check_psnr", batch_psnr)
    assert "one value per image" in failed_checks(result)
    # the report never shows the reference's values
    x, y = checks._image_pairs()
    for value in metrics.psnr(x, y):
        assert f"{value:.4g}" not in result.report()


def test_observe_mistakes():
    def all_at_once(oracle, images, *, batch_size):
        if batch_size < 1:
            raise ValueError(batch_size)
        with torch.no_grad():
            return oracle(to_float(images))

    def with_grad(oracle, images, *, batch_size):
        return solution("a2_spears", "observe")(oracle, images, batch_size=batch_size) \
            .requires_grad_()

    assert failed_checks(run("check_observe", all_at_once)) == {"batch sizes"}
    assert failed_checks(run("check_observe", with_grad)) == {"plain tensor"}


def test_train_inverse_mistakes():
    def unshuffled(inverse, features, images, *, epochs, batch_size, lr, seed):
        targets, opt, history = to_float(images), torch.optim.Adam(inverse.parameters(), lr=lr), []
        for _ in range(epochs):
            total = 0.0
            for s in range(0, len(targets), batch_size):
                loss = F.mse_loss(inverse(features[s:s + batch_size]), targets[s:s + batch_size],
                                  reduction="sum")
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss)
            history.append(total / len(targets))
        return history

    result = run("check_train_inverse", unshuffled)
    assert {"seeded shuffling", "the paper's loss"} <= failed_checks(result), result.report()

    def frozen(inverse, features, images, *, epochs, batch_size, lr, seed):
        return [1.0 - 0.1 * e for e in range(epochs)]  # reports losses, trains nothing

    assert "learning" in failed_checks(run("check_train_inverse", frozen))


def test_reconstruct_in_train_mode():
    def no_eval(inverse, features, *, batch_size):
        with torch.no_grad():
            return torch.cat([inverse(features[s:s + batch_size])
                              for s in range(0, len(features), batch_size)])

    assert failed_checks(run("check_reconstruct", no_eval)) == {"eval mode"}


# --------------------------------------------------------------------------------------------
# chapter 3
# --------------------------------------------------------------------------------------------
def test_laplace_mistakes():
    def gaussian(value, *, epsilon, sensitivity, generator):
        if epsilon <= 0 or sensitivity <= 0:
            raise ValueError("epsilon")
        return value + sensitivity / epsilon * torch.randn(value.shape, generator=generator,
                                                           dtype=value.dtype)

    def inverted(value, *, epsilon, sensitivity, generator):
        return solution("a3_shields", "laplace_mechanism")(
            value, epsilon=sensitivity, sensitivity=epsilon, generator=generator)

    def global_rng(value, *, epsilon, sensitivity, generator):
        if epsilon <= 0 or sensitivity <= 0:
            raise ValueError("epsilon")
        noise = torch.distributions.Laplace(0.0, sensitivity / epsilon).sample(value.shape)
        return value + noise.to(value.dtype)

    assert "Laplace shape" in failed_checks(run("check_laplace_mechanism", gaussian))
    assert {"scale", "scale with a larger sensitivity"} <= failed_checks(
        run("check_laplace_mechanism", inverted))
    assert failed_checks(run("check_laplace_mechanism", global_rng)) == {
        "randomness from the generator"}


def test_clamping_is_not_clipping():
    def clamp(params, *, bound):
        if bound <= 0 or not params:
            raise ValueError("bound")
        with torch.no_grad():
            for p in params:
                p.clamp_(-bound, bound)
        return 1.0

    result = run("check_clip", clamp)
    assert {"clipped values", "direction kept", "returned factor"} <= failed_checks(result)


def test_perturb_mistakes():
    laplace = solution("a3_shields", "laplace_mechanism")

    def everything(model, *, at, epsilon, clip_bound, generator):
        noisy = copy.deepcopy(model)
        with torch.no_grad():
            for layer in noisy:
                if isinstance(layer, nn.Conv2d):
                    for p in layer.parameters():
                        p.copy_(laplace(p, epsilon=epsilon, sensitivity=2 * clip_bound,
                                        generator=generator))
        return noisy

    result = run("check_perturb", everything)
    assert {"device part only (at=2)", "device part only (at=4)", "unclipped model"} == \
        failed_checks(result)

    assert "original unchanged" in failed_checks(run("check_perturb", _perturb_in_place))


def _perturb_in_place(model, *, at, epsilon, clip_bound, generator):
    laplace = solution("a3_shields", "laplace_mechanism")
    convs = [layer for layer in model if isinstance(layer, nn.Conv2d)][:at]
    if max(float(p.abs().max()) for c in convs for p in c.parameters()) > clip_bound:
        raise ValueError("not clipped")
    with torch.no_grad():
        for c in convs:
            for p in c.parameters():
                p.copy_(laplace(p, epsilon=epsilon, sensitivity=2 * clip_bound,
                                generator=generator))
    return model


def test_whole_vector_epsilon_counts_biases():
    def weights_only(model, *, at, epsilon):
        if not 1 <= at <= 6 or epsilon <= 0:
            raise ValueError(at)
        convs = [m for m in model if isinstance(m, nn.Conv2d)][:at]
        return epsilon * sum(c.weight.numel() for c in convs)

    result = run("check_whole_vector_epsilon", weights_only)
    assert {"split 1", "every split point", "other epsilons"} == failed_checks(result)


# --------------------------------------------------------------------------------------------
# chapter 4
# --------------------------------------------------------------------------------------------
def test_best_reply_ignoring_the_bounds():
    def unbounded(market, eps, reward, i):
        x = np.asarray(eps, dtype=float) / market.speeds
        others = x.sum() - x[i]
        v, k = market.speeds[i], market.costs[i]
        return float(v * (np.sqrt(reward * others / (v * k)) - others))

    result = run("check_best_reply", unbounded)
    assert {"lower bound", "upper bound", "zero reward", "maximises U_i"} == failed_checks(result)
    assert {"interior reply", "own budget"}.isdisjoint(failed_checks(result))


def test_nash_with_theorem3_closed_form():
    def closed_form(market, reward):
        return game.closed_form_equilibrium(market, reward).eps

    result = run("check_nash", closed_form)
    assert "bounds binding" in failed_checks(result) and "interior equilibrium" not in \
        failed_checks(result)


def test_utilities_without_the_share():
    def no_share(market, eps, reward):
        eps = np.asarray(eps, dtype=float)
        return reward * eps / market.speeds - eps * market.costs

    assert "reward shares" in failed_checks(run("check_vehicle_utilities", no_share))


def test_sp_curve_without_the_profit_factor():
    nash = solution("a4_incentive", "nash")

    def no_profit(market, rewards):
        return np.array([market.accuracy_a * np.sum(np.log1p(market.accuracy_b * nash(market, r))
                                                     / market.speeds) - r for r in rewards])

    assert not run("check_sp_curve", no_profit).ok
