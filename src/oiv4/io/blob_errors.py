"""The errors reading stored bytes raises on purpose; they are defined in `oiv4.contracts.errors` (`data`).

This module keeps the import path `oiv4.io.blob_errors` working for code that spells it so.
"""

from __future__ import annotations

from oiv4.contracts.errors import BadArchiveError as BadArchiveError
from oiv4.contracts.errors import BadLocationError as BadLocationError
from oiv4.contracts.errors import CorruptImageError as CorruptImageError
from oiv4.contracts.errors import ImageNotFoundError as ImageNotFoundError
from oiv4.contracts.errors import ReaderError as ReaderError
