"""Text for image/text datasets (Multimodal3DIdent): colour palettes and names, caption
templates, a data-free word tokenizer and the vocabulary (numpy only, no torch, no bpy)."""

from ident3d.text.captions import SLOTS, check_templates, make_captions, template_problem
from ident3d.text.pairs import TextSamples, color_names, multimodal_samples, text_samples
from ident3d.text.palettes import (
    PALETTE_NAMES,
    Palette,
    check_palettes,
    color_index_table,
    color_indices,
    palette_colors,
)
from ident3d.text.tokenizer import sentences, word_tokenize
from ident3d.text.vocabulary import SPECIAL_TOKENS, Vocabulary

__all__ = [
    "PALETTE_NAMES",
    "SLOTS",
    "SPECIAL_TOKENS",
    "Palette",
    "TextSamples",
    "Vocabulary",
    "check_palettes",
    "check_templates",
    "color_index_table",
    "color_indices",
    "color_names",
    "make_captions",
    "multimodal_samples",
    "palette_colors",
    "sentences",
    "template_problem",
    "text_samples",
    "word_tokenize",
]
