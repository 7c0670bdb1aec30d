"""``rebuild release``: sign a release statement offline, verify an artifact against one."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rebuild.cli._args import renamed
from rebuild.cli._output import Output
from rebuild.errors import InputError, UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from verify.intoto import Source


def register(sub: Any) -> None:
    p = sub.add_parser(
        "release",
        help="sign and verify maintainer release statements",
        description="A maintainer signs a release statement offline (the artifact's name "
        "and sha256, package, version, source and recipe, as an in-toto statement in a "
        "DSSE envelope); anyone verifies an artifact against it with the public key.",
    )
    rsub = p.add_subparsers(dest="release_command", metavar="ACTION", required=True)

    s = rsub.add_parser(
        "sign",
        help="sign a release statement for ARTIFACT",
        description=(
            "Write a DSSE envelope holding an in-toto release statement: ARTIFACT's name and "
            "sha256, the recipe's package, version and source, and the recipe text with its "
            "digest, signed with the maintainer's secret key. Never overwrites without --force."
        ),
    )
    s.add_argument("artifact", type=Path, metavar="ARTIFACT", help="the released file")
    s.add_argument("--recipe", required=True, type=Path, metavar="R", help="build recipe (TOML)")
    s.add_argument("--key", required=True, type=Path, metavar="K", help="secret key file")
    s.add_argument(
        "--out", type=Path, metavar="F", help="envelope file (default: ARTIFACT.release.json)"
    )
    s.add_argument(
        "--url",
        metavar="URL",
        help="where the artifact will be downloadable (the statement's downloadLocation, "
        "so 'rebuild verify STATEMENT' and 'rebuild fetch' find it); a directory URL ending "
        "in / gets ARTIFACT's name appended",
    )
    s.add_argument("--package", metavar="P", help="fail unless the recipe is for package P")
    s.add_argument("--version", metavar="V", help="fail unless the recipe is for version V")
    s.add_argument("--force", action="store_true", help="replace an existing envelope file")
    s.add_argument(
        "--passphrase-env",
        metavar="VAR",
        help="take K's passphrase from VAR (default: REBUILD_PASSPHRASE, else a prompt)",
    )
    s.add_argument("--json", action="store_true", help="print one JSON document")
    s.set_defaults(func=cmd_sign)

    v = rsub.add_parser(
        "verify",
        help="check ARTIFACT against a signed release statement",
        description=(
            "Exit 0 when a trusted maintainer key signed the statement and ARTIFACT's sha256 "
            "is one of its subjects; 1 when the signature or the digest does not match; "
            "2 when an input is unusable."
        ),
    )
    v.add_argument("artifact", type=Path, metavar="ARTIFACT")
    v.add_argument("--statement", required=True, type=Path, metavar="S", help="envelope file")
    v.add_argument(
        "--maintainer-key",
        dest="maintainer_keys",
        required=True,
        action="append",
        metavar="PUB",
        help="trusted maintainer verifier key (a .pub file or name+id+key); repeatable",
    )
    renamed(v, "--maintainer-key", "--key-file")
    v.add_argument("--json", action="store_true", help="print one JSON document")
    v.set_defaults(func=cmd_verify, negative_verdict="invalid")


def _source_doc(source: Source) -> dict[str, str]:
    return source.to_dict()


def _source_text(source: Source) -> str:
    from verify.intoto import GitSource  # noqa: PLC0415

    if isinstance(source, GitSource):
        return f"git {source.url} {source.tag} @ {source.commit}"
    return f"sdist {source.url} sha256 {source.sha256}"


def cmd_sign(args: argparse.Namespace, out: Output) -> int:
    from rebuild.fsio import atomic_write  # noqa: PLC0415
    from rebuild.keystore import load_signing_key  # noqa: PLC0415
    from rebuild.recipe import load_recipe  # noqa: PLC0415
    from rebuild.release import release_statement, sign_release  # noqa: PLC0415
    from verify.dsse import key_hint  # noqa: PLC0415

    artifact: Path = args.artifact
    dest: Path = args.out or artifact.with_name(artifact.name + ".release.json")
    if dest.exists() and not args.force:
        raise UsageError(f"{dest}: already exists; use --force to replace it")
    for name, src in (("ARTIFACT", artifact), ("--recipe", args.recipe), ("--key", args.key)):
        if _same_file(dest, src):
            raise UsageError(f"{dest}: is the {name} file; refusing to write the envelope over it")
    recipe = load_recipe(args.recipe)
    statement = release_statement(
        [artifact], recipe, package=args.package, version=args.version, url=args.url
    )
    key = load_signing_key(args.key, args.passphrase_env)
    envelope = sign_release(statement, key)
    atomic_write(dest, envelope + b"\n", overwrite=args.force)
    subject = statement.subjects[0]
    signer = key_hint(key.verifier_key())
    doc = {
        "statement_file": str(dest),
        "artifact": subject.name,
        "sha256": subject.sha256,
        "download_location": subject.download_location,
        "package": recipe.package,
        "version": recipe.version,
        "source": _source_doc(recipe.source),
        "recipe_sha256": recipe.sha256,
        "signer": signer,
        "envelope_bytes": len(envelope),
    }

    def human(c: Console) -> None:
        c.print(f"signed {recipe.package} {recipe.version} as {signer}", markup=False)
        c.print(f"  artifact  {subject.name}  sha256 {subject.sha256}", markup=False)
        c.print(f"  source    {_source_text(recipe.source)}", markup=False)
        c.print(f"  recipe    {args.recipe}  sha256 {recipe.sha256}", markup=False)
        if subject.download_location:
            c.print(f"  download  {subject.download_location}", markup=False)
        c.print(f"  wrote     {dest} ({len(envelope) + 1} bytes)", markup=False)

    out.result(doc, human)
    return 0


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def cmd_verify(args: argparse.Namespace, out: Output) -> int:
    from rebuild.keystore import load_verifier_key  # noqa: PLC0415
    from rebuild.release import verify_release  # noqa: PLC0415
    from verify.dsse import key_hint  # noqa: PLC0415
    from verify.keys import ALG_ED25519  # noqa: PLC0415

    trusted = [load_verifier_key(k) for k in args.maintainer_keys]
    for spec, key in zip(args.maintainer_keys, trusted, strict=True):
        if key.algorithm != ALG_ED25519:
            raise InputError(
                f"{spec}: a type 0x{key.algorithm:02x} (witness) key cannot sign releases"
            )
    check = verify_release(args.artifact, args.statement, trusted)
    pred = check.predicate
    signers = [key_hint(k) for k in check.signers]
    doc = {
        "verdict": "valid",
        "artifact": str(args.artifact),
        "sha256": check.artifact_sha256,
        "subject": check.subject.name,
        "package": pred.package,
        "version": pred.version,
        "source": _source_doc(pred.source),
        "recipe_sha256": pred.recipe_sha256,
        "signers": signers,
    }

    def human(c: Console) -> None:
        from rich.text import Text  # noqa: PLC0415

        c.print(
            Text.assemble(
                ("valid", "bold green"),
                f": {args.artifact} is release {pred.package} {pred.version}",
            )
        )
        c.print(f"  sha256     {check.artifact_sha256}", markup=False)
        c.print(f"  subject    {check.subject.name}", markup=False)
        c.print(f"  signed by  {', '.join(signers)}", markup=False)
        c.print(f"  source     {_source_text(pred.source)}", markup=False)
        c.print(f"  recipe     sha256 {pred.recipe_sha256}", markup=False)

    out.result(doc, human)
    return 0
