"""The California Housing columns every step shares: the 8 features and the target.

Defined here, apart from :mod:`steps.data` (reading and checking files) and :mod:`steps.split`
(the train/test split), so that neither of those needs to import the other for them.
"""

from __future__ import annotations

#: The 8 features, in scikit-learn's order (:func:`sklearn.datasets.fetch_california_housing`).
FEATURES: tuple[str, ...] = (
    "MedInc",
    "HouseAge",
    "AveRooms",
    "AveBedrms",
    "Population",
    "AveOccup",
    "Latitude",
    "Longitude",
)
#: The target: median house value of the district in units of $100,000.
TARGET = "MedHouseVal"
