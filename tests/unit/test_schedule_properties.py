"""Property tests (hypothesis) of schedule parsing and per-step sizes: valid schedules parse to exactly their values
and give consistent sizes ending exactly at the final size; anything else raises ScheduleError, never another
exception. 500 examples per property."""
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from swd_sampler.schedule import (CUSTOM, MAX_STEPS, ScheduleError, parse_scales, parse_sigmas, resolve,
                                  step_sizes)

EXAMPLES = settings(max_examples=500, deadline=None)
SEPARATORS = st.sampled_from([", ", ",", " ", "; ", ";", "\t", ",\n", "  ,  "])

positive = st.floats(min_value=1e-6, max_value=1e6, allow_nan=False, allow_infinity=False)
scale_lists = st.lists(positive, min_size=1, max_size=MAX_STEPS).map(sorted)


def sigma_lists(steps):
    """`steps` distinct noise levels in (0, 1], decreasing, then the closing 0."""
    levels = st.floats(min_value=0.0, max_value=1.0, exclude_min=True)
    return st.lists(levels, min_size=steps, max_size=steps, unique=True).map(lambda v: sorted(v, reverse=True) + [0.0])


@st.composite
def written(draw, values):
    """`values` written as a user might: repr() of each (round-trips exactly), any separators, maybe brackets."""
    parts = [repr(float(v)) for v in values]
    text = parts[0] + "".join(draw(SEPARATORS) + p for p in parts[1:])
    return draw(st.sampled_from(["{}", "[{}]", "({})", "  {}  "])).format(text)


def assert_sizes_consistent(scales, height, width, patch):
    sizes = step_sizes(scales, height, width, patch)
    assert len(sizes) == len(scales)
    assert sizes[-1] == (height, width)
    for (h0, w0), (h1, w1) in zip(sizes, sizes[1:]):
        assert h0 <= h1 and w0 <= w1  # never shrinks
    for (h, w), s in zip(sizes, scales):
        assert h % patch == 0 and w % patch == 0 and h >= patch and w >= patch
        for side, n in ((h, height), (w, width)):  # the nearest multiple of the patch to n * s / s_last
            exact = n * s / scales[-1]
            assert side == patch or abs(side - exact) <= patch / 2 + 1e-6 * n


@EXAMPLES
@given(st.data(), scale_lists)
def test_valid_schedules_parse_to_exactly_their_values(data, scales):
    sigmas = data.draw(sigma_lists(len(scales)))
    got_scales, got_sigmas = resolve(CUSTOM, data.draw(written(scales)), data.draw(written(sigmas)))
    assert list(got_scales) == scales and list(got_sigmas) == sigmas


@EXAMPLES
@given(scale_lists, st.sampled_from([1, 2]), st.integers(1, 512), st.integers(1, 512))
def test_valid_scales_give_consistent_sizes_ending_exactly_at_the_final_size(scales, patch, h, w):
    assert_sizes_consistent(tuple(scales), h * patch, w * patch, patch)


@EXAMPLES
@given(scale_lists, st.sampled_from([1, 2]), st.integers(-64, 2048), st.integers(-64, 2048))
def test_any_final_size_gives_consistent_sizes_or_a_schedule_error(scales, patch, height, width):
    try:
        assert_sizes_consistent(tuple(scales), height, width, patch)
    except ScheduleError:
        assert height < patch or width < patch or height % patch or width % patch


LOOKALIKES = "\uff0c\u2212\u2013\uff11\u0661\u00b7\u066b\u3001\uff0e"


@EXAMPLES
@given(st.one_of(st.text(), st.text(alphabet="0123456789.,; -+eEinfa[]()\t\n" + LOOKALIKES)))
def test_any_text_parses_to_a_valid_schedule_or_raises_schedule_error(text):
    for parse in (parse_scales, parse_sigmas, lambda t: parse_sigmas(t, steps=3)):
        try:
            values = parse(text)
        except ScheduleError:
            continue
        assert text.isascii() or all(c.isascii() or c.isspace() for c in text)
        assert all(math.isfinite(v) for v in values) and 1 <= len(values) <= MAX_STEPS + 1
        if parse is parse_scales:
            assert all(v > 0 for v in values) and list(values) == sorted(values)
        else:
            assert values[-1] == 0.0 and all(a > b for a, b in zip(values, values[1:])) and values[0] <= 1.0


MUTATIONS = {
    "not a number": lambda parts: parts + ["abc"],
    "nan": lambda parts: parts[:-1] + ["nan"] + parts[-1:],
    "infinite": lambda parts: parts[:-1] + ["inf"] + parts[-1:],
    "negative": lambda parts: ["-1.0"] + parts,
    "look-alike comma": lambda parts: ["\uff0c".join(parts)],
    "unicode minus": lambda parts: parts + ["\u22121"],
    "too many": lambda parts: parts * (MAX_STEPS + 2),
    "empty": lambda parts: [],
}


@EXAMPLES
@given(scale_lists.filter(lambda s: s[0] < s[-1]), st.sampled_from(sorted(MUTATIONS)), st.booleans())
def test_invalid_scales_always_raise_schedule_error(scales, mutation, also_reverse):
    parts = [repr(s) for s in (scales[::-1] if also_reverse else scales)]
    text = ", ".join(MUTATIONS[mutation](parts))
    try:
        parse_scales(text)
    except ScheduleError:
        return
    raise AssertionError(f"{mutation}: {text!r} was accepted")
