"""The README's sqlite3 shell and Rust examples, run against the test server (the Python and Node
examples run in test_python_wheel.py and test_node.py, where their packages are installed).

The Rust example is compiled as the body of a main() in a throwaway crate that depends on
rusqlite as tests/rust_host does (same Cargo.lock, same target folder, so nothing but the example
itself is compiled once tests/rust_host was built)."""
import shutil
import subprocess

from pysupport.awsenv import child_env
from pysupport.paths import REPO, SQLITE3

import readme

RUST_HOST = REPO / "tests" / "rust_host"
CARGO_TOML = """[package]
name = "readme-rust-example"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

[dependencies]
rusqlite = { version = "0.38", default-features = false, features = ["load_extension"] }
"""
# The README shows the body of a function returning Result: give it one.
MAIN_BEFORE = "fn main() -> Result<(), Box<dyn std::error::Error>> {\n"
MAIN_AFTER = "    println!(\"{txid}\");\n    Ok(())\n}\n"


def test_readme_shell_example(ext, s3, bucket, tmp_path):
    readme.run_example("shell", [SQLITE3, "app.db"], tmp_path, s3, bucket, ext,
                       stdin_file=True)


def test_readme_rust_example(ext, s3, bucket, tmp_path):
    crate = tmp_path / "crate"
    (crate / "src").mkdir(parents=True)
    (crate / "Cargo.toml").write_text(CARGO_TOML)
    shutil.copy(RUST_HOST / "Cargo.lock", crate / "Cargo.lock")
    body = readme.prepared("rust", bucket, s3.endpoint, ext)
    (crate / "src" / "main.rs").write_text(MAIN_BEFORE + body + MAIN_AFTER)
    binary = RUST_HOST / "target" / "release" / "readme-rust-example"
    p = subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=crate,
                       text=True, capture_output=True, timeout=900,
                       env=child_env({"CARGO_TARGET_DIR": str(RUST_HOST / "target")}))
    assert p.returncode == 0, "the README's Rust example does not compile:\n%s" % p.stderr[-4000:]
    readme.run_example("rust", [str(binary)], tmp_path, s3, bucket, ext)
