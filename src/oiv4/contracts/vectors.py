"""The facts every similarity stage shares: which model is the default, how vectors may be stored, and the
ground-truth job's defaults. `features`, `neighbors` and `estimate` are stages that never import each other,
so what they must agree on lives here, once.
"""

from __future__ import annotations

#: The paper's representation (Bee et al. 2021): VGG16's FC2 activations.
DEFAULT_MODEL = "vgg16-fc2"
#: How vectors may be stored, and the bytes of one element of each.
VECTOR_DTYPES: dict[str, int] = {"float16": 2, "float32": 4}
#: float16 halves the disk; the search re-ranks in float64, so ground truth does not depend on it.
DEFAULT_DTYPE = "float16"
#: Neighbours per query of a ground-truth job.
DEFAULT_K = 100
#: Memory bound of each process that searches, in GiB.
DEFAULT_MEMORY_GB = 2.0
