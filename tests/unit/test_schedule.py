"""Presets, schedule parsing and per-step sizes (swd_sampler.schedule), checked against the formulas."""
import math
import re

import pytest

from swd_sampler.schedule import (CUSTOM, DEFAULT_PRESET, PRESET_NAMES, PRESETS, ScheduleError, check_counts,
                                  parse_scales, parse_sigmas, resolve, step_sizes)


def test_presets_match_the_design_table():
    table = {
        "SD3.5 Medium · 6 steps": ([32, 48, 64, 80, 96, 128], [1.0, 0.9454, 0.8959, 0.7904, 0.7371, 0.6022, 0.0]),
        "SD3.5 Medium · 4 steps": ([64, 80, 96, 128], [1.0, 0.8959, 0.7371, 0.6022, 0.0]),
        "SD3.5 Medium · 4 steps (2025 README)": ([32, 64, 96, 128], [1.0, 0.9454, 0.7904, 0.6022, 0.0]),
        "SD3.5 Large · 4 steps": ([64, 80, 96, 128], [1.0, 0.8959, 0.7371, 0.6022, 0.0]),
        "SD3.5 Large · 6 steps (older release)": ([32, 48, 64, 80, 96, 128], [1.0, 0.9454, 0.8959, 0.7904, 0.7371, 0.6022, 0.0]),
        "FLUX.1-dev · 4 steps": ([64, 80, 96, 128], [1.0, 0.8956, 0.7363, 0.6007, 0.0]),
        "SDXL · 4 steps": ([64, 80, 96, 128], [1.0, 0.8, 0.6, 0.4, 0.0]),
        "Tiny demo · 4 steps": ([8, 10, 12, 16], [1.0, 0.8959, 0.7371, 0.6022, 0.0]),  # the pack's own family
    }
    assert {n: (list(p.scales), list(p.sigmas)) for n, p in PRESETS.items()} == table
    assert DEFAULT_PRESET == "SD3.5 Medium · 6 steps" and PRESET_NAMES[-1] == CUSTOM
    assert PRESETS["FLUX.1-dev · 4 steps"].guidance == 4.5
    assert PRESETS["SDXL · 4 steps"].family == "eps"


def test_resolve_custom_parses_sizes_fractions_and_separators():
    assert resolve(CUSTOM, "32,48 64;80  96,128", "1.0, 0.9454, 0.8959, 0.7904, 0.7371, 0.6022, 0") == (
        (32, 48, 64, 80, 96, 128), (1.0, 0.9454, 0.8959, 0.7904, 0.7371, 0.6022, 0.0))
    assert resolve(CUSTOM, "[0.5, 0.75, 1.0]", "1 0.8 0.6 0") == ((0.5, 0.75, 1.0), (1.0, 0.8, 0.6, 0.0))


def test_trailing_zero_sigma_may_be_left_out():
    assert resolve(CUSTOM, "64, 80, 96, 128", "1.0, 0.8959, 0.7371, 0.6022") == (
        (64, 80, 96, 128), (1.0, 0.8959, 0.7371, 0.6022, 0.0))


@pytest.mark.parametrize("scales, sigmas, names", [
    ("64, 80, 96, 128", "1.0, 0.8, 0.0", ("scales", "sigmas")),         # counts do not match
    ("64, 96, 80, 128", "1.0, 0.9, 0.8, 0.6, 0.0", ("scales",)),         # decreasing sizes
    ("64, 128", "1.5, 0.5, 0.0", ("sigmas",)),                           # outside [0, 1]
    ("64, 128", "1.0, -0.5, 0.0", ("sigmas",)),
    ("64, 128", "0.5, 0.9, 0.0", ("sigmas",)),                            # not decreasing
    ("64, 128", "1.0, 0.5, 0.5, 0.0", ("sigmas",)),
    ("64, abc", "1.0, 0.5, 0.0", ("scales",)),                            # not a number
    ("64, 128", "1.0, x, 0.0", ("sigmas",)),
    ("", "1.0, 0.5, 0.0", ("scales",)),                                   # empty
    ("64, 128", "  ", ("sigmas",)),
    ("0, 128", "1.0, 0.5, 0.0", ("scales",)),                             # non-positive size
    ("64, nan", "1.0, 0.5, 0.0", ("scales",)),
])
def test_malformed_schedules_raise_one_clear_error_naming_the_input(scales, sigmas, names):
    with pytest.raises(ScheduleError) as e:
        resolve(CUSTOM, scales, sigmas)
    assert any(n in str(e.value) for n in names), str(e.value)


def test_unknown_preset_lists_the_choices():
    with pytest.raises(ScheduleError, match="SD3.5 Medium · 6 steps"):
        resolve("SD3 Turbo", "", "")


def test_sigmas_must_end_with_zero():
    with pytest.raises(ScheduleError, match="end with 0"):
        parse_sigmas("1.0, 0.5, 0.2", steps=2)


def test_check_counts_message_says_the_rule():
    with pytest.raises(ScheduleError, match=r"len\(scales\) = len\(sigmas\) - 1"):
        check_counts((1, 2), (1.0, 0.0))


def reference_side(n, s, last, p):
    """h = p * floor(n * s / (last * p) + 1/2), at least p."""
    return max(p * math.floor(n * s / (last * p) + 0.5), p)


@pytest.mark.parametrize("height, width, patch", [(128, 128, 2), (96, 160, 2), (168, 96, 2), (128, 96, 1), (77, 53, 1)])
@pytest.mark.parametrize("preset", list(PRESETS))
def test_step_sizes_follow_the_rounding_formula(preset, height, width, patch):
    scales = PRESETS[preset].scales
    sizes = step_sizes(scales, height, width, patch)
    expected = [(reference_side(height, s, scales[-1], patch), reference_side(width, s, scales[-1], patch))
                for s in scales[:-1]] + [(height, width)]
    assert sizes == expected
    assert all(h % patch == 0 and w % patch == 0 for h, w in sizes)
    assert sizes == sorted(sizes)


def test_step_sizes_of_the_paper_at_1024px_and_a_half_rounding_up():
    assert step_sizes((32, 48, 64, 80, 96, 128), 128, 128, 2) == [(32, 32), (48, 48), (64, 64), (80, 80), (96, 96), (128, 128)]
    # 96 * 48 / 128 = 36 exactly; 20 * 48 / (128 * 2) = 3.75 -> 4 patches; 12 * 0.375 / 2 = 2.25 -> 2 patches
    assert step_sizes((48, 128), 96, 20, 2) == [(36, 8), (96, 20)]
    # a half rounds up: 10 * 0.25 / 1 = 2.5 -> 3
    assert step_sizes((0.25, 1.0), 10, 10, 1) == [(3, 3), (10, 10)]
    # tiny sizes never go below one patch
    assert step_sizes((1, 128), 16, 16, 2) == [(2, 2), (16, 16)]


def test_fractions_and_sizes_give_the_same_steps():
    assert step_sizes((0.25, 0.375, 0.5, 0.625, 0.75, 1.0), 96, 160, 2) == step_sizes((32, 48, 64, 80, 96, 128), 96, 160, 2)


def test_final_size_not_divisible_by_the_patch_is_refused():
    with pytest.raises(ScheduleError, match="patch size 2"):
        step_sizes((64, 128), 97, 128, 2)


def test_parse_scales_rejects_decrease_with_both_values():
    with pytest.raises(ScheduleError, match="80 follows 96"):
        parse_scales("64, 96, 80")


@pytest.mark.parametrize("text, message", [
    ("1,0; 0,8; 0", "decimal commas"),
    ("1,0 0,8 0", "decimal commas"),
    ("1.0\uff0c 0.5, 0", "U+FF0C FULLWIDTH COMMA"),
    ("1.0, \u22120.5, 0", "U+2212 MINUS SIGN"),
    ("\u0661, 0", "ARABIC-INDIC DIGIT ONE"),  # float() would accept it
    (", ".join(["0.5"] * 70), "at most 64 steps"),
])
def test_sigmas_typing_mistakes_are_named(text, message):
    with pytest.raises(ScheduleError, match=re.escape(message)):
        parse_sigmas(text)


def test_white_space_of_any_kind_separates_numbers():
    assert parse_scales("64\u00a0128") == (64, 128)


def test_an_empty_final_size_is_refused():
    with pytest.raises(ScheduleError, match="empty or smaller than the model's patch size"):
        step_sizes((64, 128), 0, 128, 2)
