"""Layer 4: search strategies, thin classes over the engine."""

from advspatial.strategies.base import SpatialSearch
from advspatial.strategies.first_order import SpatialPGD
from advspatial.strategies.grid import GridSearch, GridSearchRotoTranslation
from advspatial.strategies.result import SearchResult
from advspatial.strategies.worst_of_k import WorstOfK

__all__ = [
    "GridSearch",
    "GridSearchRotoTranslation",
    "SearchResult",
    "SpatialPGD",
    "SpatialSearch",
    "WorstOfK",
]
