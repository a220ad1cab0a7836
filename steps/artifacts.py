"""How step results travel between pipeline steps when steps run as separate tasks.

ClearML's default stores a DataFrame as CSV text (``.csv.gz``): slow to write and read, several
times the binary size, and float32 comes back as float64. These functions keep DataFrames,
Series and fitted estimators exact, in their binary size (8 bytes per float64 value), with
:mod:`pickle` protocol 5. ClearML copies their source, and this module's imports, into every
step's generated code, so the module imports nothing at its top.
"""


def serialize_artifact(obj) -> bytes:
    """Bytes of ``obj`` (any picklable object: DataFrame, Series, fitted estimator)."""
    import pickle

    return pickle.dumps(obj, protocol=5)


def deserialize_artifact(data: bytes):
    """The object :func:`serialize_artifact` turned into ``data``."""
    import pickle

    return pickle.loads(data)
