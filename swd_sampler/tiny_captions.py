"""The tiny demo family's caption grammar: "{texture} {colour} {shape} {position} on {background}", any part of it in
any order, or nothing (the unconditional prompt); 2 * 5 * 3 * 4 * 4 = 480 combinations. Plain Python: the text
encoder (tiny.py) and the scene renderer (swd_distill/scenes.py) both read it."""
from __future__ import annotations

TEXTURES = ("solid", "striped")
COLOURS = ("red", "yellow", "white", "magenta", "cyan")
SHAPES = ("circle", "square", "triangle")
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
BACKGROUNDS = ("blue", "green", "gray", "black")

# The five attributes in caption order, each with its values (the classes the judge predicts).
ATTRIBUTES: dict[str, tuple[str, ...]] = {"texture": TEXTURES, "colour": COLOURS, "shape": SHAPES,
                                          "position": POSITIONS, "background": BACKGROUNDS}
GRAMMAR = "{texture} {colour} {shape} {position} on {background}"


class CaptionError(ValueError):
    """A caption outside the tiny family's vocabulary; the message lists the vocabulary."""


def vocabulary() -> str:
    """The vocabulary in words, for error messages and tooltips."""
    return "; ".join(f"{a}: {', '.join(v)}" for a, v in ATTRIBUTES.items())


def parse_caption(text: str) -> dict[str, str]:
    """{attribute: value} for the attributes a caption names, in any order; "on" is optional filler. The empty
    caption gives {} (unconditional). Raises CaptionError for an unknown word or an attribute named twice."""
    words = text.lower().replace(",", " ").split()
    found: dict[str, str] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if word == "on":
            i += 1
            continue
        two = " ".join(words[i:i + 2])
        value, width = (two, 2) if two in POSITIONS else (word, 1)
        attribute = next((a for a, values in ATTRIBUTES.items() if value in values), None)
        if attribute is None:
            hint = " (a position is two words, e.g. \"top left\")" if word in ("top", "bottom", "left", "right") else ""
            raise CaptionError(f"text: the word {word!r} is not in the tiny models' vocabulary{hint}. Write "
                               f"\"{GRAMMAR}\" (e.g. \"striped red circle top left on blue\"), any part of it, or "
                               f"nothing for unconditional. Vocabulary: {vocabulary()}.")
        if attribute in found:
            raise CaptionError(f"text: the {attribute} is given twice ({found[attribute]!r} and {value!r}); name "
                               f"each attribute once.")
        found[attribute] = value
        i += width
    return found
