"""One exception tree for everything pg_imgembed reports, each class mapped to a SQLSTATE.

The server boundary turns these into ``ERROR``s carrying ``sqlstate``, ``detail`` and ``hint``;
messages name the thing at fault (model, byte length, detected format) so a user can act on them.
Standard SQLSTATEs are used so PL/pgSQL handlers can catch them by condition name.
"""

from __future__ import annotations


class ImgEmbedError(Exception):
    """Base class. ``sqlstate`` is what the server reports for it."""

    sqlstate = "XX000"  # internal_error

    def __init__(self, message: str, *, detail: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.hint = hint

    def add_detail(self, context: str) -> None:
        """Append where it happened (array element, model) to the detail."""
        self.detail = "; ".join(filter(None, [self.detail, context]))


class ImageError(ImgEmbedError):
    """The image bytes of one row are unusable. Triggers with on_error => 'null' absorb these."""


class UndecodableImage(ImageError):
    sqlstate = "22P03"  # invalid_binary_representation


class InputTooLarge(ImgEmbedError):
    """An input over one of its limits: an image's pixels, a text query's bytes."""

    sqlstate = "54000"  # program_limit_exceeded


class ImageTooLarge(ImageError, InputTooLarge):
    """An unusable image (on_error => 'null' absorbs it) as well as an input over its limit."""


class TextTooLong(InputTooLarge):
    """A text query longer than a text tower takes (text/tower.py: MAX_TEXT_BYTES)."""


class UnknownModel(ImgEmbedError):
    sqlstate = "42704"  # undefined_object


class PermissionDenied(ImgEmbedError):
    sqlstate = "42501"  # insufficient_privilege


class ModelPermissionDenied(ImgEmbedError):
    """The role has no usage privilege on the model (imgembed.grant_model_usage)."""

    sqlstate = "42501"  # insufficient_privilege


class NoDefaultModel(ImgEmbedError):
    sqlstate = "55000"  # object_not_in_prerequisite_state


class InvalidModel(ImgEmbedError):
    """An ONNX file that cannot serve as an image embedding model."""

    sqlstate = "22023"  # invalid_parameter_value


class InvalidConfig(ImgEmbedError):
    """A preprocessing config or an argument value that is not understood."""

    sqlstate = "22023"  # invalid_parameter_value


class NullArgument(ImgEmbedError):
    sqlstate = "22004"  # null_value_not_allowed


class DuplicateModel(ImgEmbedError):
    sqlstate = "42710"  # duplicate_object


class ModelInUse(ImgEmbedError):
    sqlstate = "55006"  # object_in_use


class UndefinedTrigger(ImgEmbedError):
    sqlstate = "42704"  # undefined_object


class InvalidSetting(ImgEmbedError):
    sqlstate = "22023"  # invalid_parameter_value


class DimensionMismatch(ImgEmbedError):
    sqlstate = "42804"  # datatype_mismatch


class InvalidColumn(ImgEmbedError):
    sqlstate = "42804"  # datatype_mismatch


class UndefinedColumn(ImgEmbedError):
    sqlstate = "42703"  # undefined_column


class ModelReplaced(ImgEmbedError):
    """The model was replaced while a backfill embedded with it: retry."""

    sqlstate = "40001"  # serialization_failure


class BoundModelMismatch(ImgEmbedError):
    """A backfill named a model other than the one the column's trigger is bound to."""

    sqlstate = "55000"  # object_not_in_prerequisite_state


class TowerMismatch(ImgEmbedError):
    """A text tower loaded against an image tower that has been replaced since."""

    sqlstate = "55000"  # object_not_in_prerequisite_state


class InferenceFailed(ImgEmbedError):
    sqlstate = "38000"  # external_routine_exception


class InferenceServerUnavailable(ImgEmbedError):
    """The inference server (imgembed.inference_server, the worker's --inference-server) did not
    answer: refused, unreachable, or slower than imgembed.inference_timeout_ms."""

    sqlstate = "08006"  # connection_failure


class ServedModelMismatch(ImgEmbedError):
    """The inference server does not serve the stored model's bytes (another version, a replaced
    model not yet loaded, or none)."""

    sqlstate = "55000"  # object_not_in_prerequisite_state


class ProviderUnavailable(ImgEmbedError):
    """The onnxruntime execution provider asked for (``cuda``) cannot run on this host."""

    sqlstate = "55000"  # object_not_in_prerequisite_state


class WorkerNotAllowed(ImgEmbedError):
    """The worker's role may not claim jobs (not a member of imgembed_worker)."""

    sqlstate = "42501"  # insufficient_privilege


class ParallelModeError(ImgEmbedError):
    sqlstate = "25000"  # invalid_transaction_state


class RuntimeShadowed(ImgEmbedError):
    """A runtime package would be imported from outside the runtime (e.g. Debian's dist-packages)."""

    sqlstate = "58P01"  # undefined_file


class RuntimeMismatch(ImgEmbedError):
    """The Python runtime does not match the installed SQL (version or missing package), or a
    worker's packages differ from the server's (its vectors would differ from img_embedding's)."""

    sqlstate = "55000"  # object_not_in_prerequisite_state
