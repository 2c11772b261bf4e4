"""One error base: every failure carries a Reason and whether to retry; no getattr on errors."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from flowexport import errors
from flowexport.api.validation import SpecError
from flowexport.aws.errors import AwsError
from flowexport.errors import ConfigError, FlowExportError, Reason, unexpected
from flowexport.pce import errors as pce_errors
from flowexport.pce.errors import PCEError, PCEUnavailableError

PACKAGE = Path(__file__).resolve().parents[1] / "operator" / "flowexport"


def test_retryable_follows_the_reason_unless_said() -> None:
    assert AwsError("x", Reason.AWS_THROTTLED).retryable
    assert not AwsError("x", Reason.AWS_ACCESS_DENIED).retryable
    assert not AwsError("x", Reason.AWS_THROTTLED, retryable=False).retryable
    assert PCEUnavailableError("x").retryable and not PCEError("x").retryable
    assert ConfigError("x", Reason.SECRET_NOT_FOUND).reason is Reason.SECRET_NOT_FOUND
    assert SpecError([("spec.x", "bad")]).reason is Reason.INVALID_SPEC


def test_every_error_of_the_product_is_a_flowexport_error_drawn_in_the_hierarchy() -> None:
    drawn = inspect.getdoc(errors) or ""
    own = inspect.getmembers(pce_errors, inspect.isclass)
    pce = [c for _, c in own if c.__module__ == pce_errors.__name__]
    for cls in [AwsError, ConfigError, SpecError, *pce]:
        assert issubclass(cls, FlowExportError)
        assert cls.__name__ in drawn, f"{cls.__name__} missing from the hierarchy drawing"
        assert isinstance(cls.reason, Reason)
    for cls in [SpecError, *pce]:
        assert cls.reason.value in drawn, f"{cls.__name__}'s reason missing from the drawing"


def test_an_unexpected_error_keeps_only_its_type() -> None:
    error = unexpected(KeyError("api_secret_value"))
    assert error.reason is Reason.INTERNAL_ERROR and error.retryable
    assert "api_secret_value" not in str(error) and "KeyError" in str(error)


def test_no_error_is_read_back_with_getattr() -> None:
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr":
                target = node.args[0]
                if isinstance(target, ast.Name) and target.id in {"exc", "error", "err", "e"}:
                    found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert found == []
