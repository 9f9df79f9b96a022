"""Refinement of a model's class probabilities before the argmax: a dense CRF (:mod:`geoseg.refine.crf`)."""

from geoseg.refine.crf import CRFSettings, refine_chunk, refine_probabilities

__all__ = ["CRFSettings", "refine_chunk", "refine_probabilities"]
