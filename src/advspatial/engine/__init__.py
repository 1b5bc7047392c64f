"""Layer 3: the batched search engine and the model-state guard."""

from advspatial.engine.chunking import default_chunk_size
from advspatial.engine.model_state import scoring_mode, unwrap_model
from advspatial.engine.objectives import select_worst
from advspatial.engine.search import Scores, ScoringConfig, model_outputs, score_candidates
from advspatial.engine.tuning import forget_chunk_tunings

__all__ = [
    "Scores",
    "ScoringConfig",
    "default_chunk_size",
    "forget_chunk_tunings",
    "model_outputs",
    "score_candidates",
    "scoring_mode",
    "select_worst",
    "unwrap_model",
]
