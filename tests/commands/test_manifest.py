from pathlib import Path

import pytest

from flowexport.api.validation import SpecError
from flowexport.commands.manifest import ManifestError, load_manifest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flowexport-minimal.yaml"


def test_example_loads() -> None:
    manifest = load_manifest(EXAMPLE)
    assert manifest.owner == "security/prod-vpc"
    assert manifest.spec.aws.vpc_id == "vpc-0123456789abcdef0"
    assert manifest.secret("pce-api-key", "username") == "api_0123456789abcdef"
    assert "replace-with" not in repr(manifest)


def test_data_is_base64_and_string_data_wins(tmp_path: Path) -> None:
    text = EXAMPLE.read_text().replace(
        "stringData:\n  username: api_0123456789abcdef   # the API key's auth username\n",
        "data:\n  username: YXBpX2Zyb21fZGF0YQ==\n  other: b3RoZXI=\nstringData:\n",
    )
    path = tmp_path / "m.yaml"
    path.write_text(text)
    manifest = load_manifest(path)
    assert manifest.secret("pce-api-key", "username") == "api_from_data"
    assert manifest.secret("pce-api-key", "other") == "other"


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        ("kind: Secret\nmetadata: {name: x}\n", ManifestError, "exactly one FlowExport"),
        (
            "apiVersion: flowexport.io/v1alpha1\nkind: FlowExport\nmetadata: {}\nspec: {}\n",
            SpecError,
            "metadata.name",
        ),
        (
            "apiVersion: flowexport.io/v1alpha1\nkind: FlowExport\nmetadata: {name: x}\nspec: {}\n",
            SpecError,
            "spec.aws",
        ),
        (": : :\n", ManifestError, "not valid YAML"),
    ],
)
def test_bad_manifests(tmp_path: Path, text: str, error: type[Exception], message: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(error, match=message):
        load_manifest(path)


def test_credentials_in_the_pce_url_are_refused_unrepeated(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        EXAMPLE.read_text().replace(
            "url: https://pce.example.com:8443", "url: https://api_0123:T0pS3cret@pce.example.com"
        )
    )
    with pytest.raises(SpecError, match=r"spec\.pce\.url: .*must not contain credentials") as e:
        load_manifest(path)
    assert "T0pS3cret" not in str(e.value)
