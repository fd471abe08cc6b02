# compose with its tenders, wrapped so that it finds the source tree its builds use
# (share/compose, a complete copy of the workspace), its tenders and the pinned toolchain.
{
  lib,
  stdenv,
  makeRustPlatform,
  makeWrapper,
  # The toolchain rust-toolchain.toml pins, with its targets (rust-overlay's
  # rust-bin.fromRustupToolchainFile).
  rustToolchain,
  # The workspace, filtered to what the build needs (flake.nix).
  src,
}:
let
  rustPlatform = makeRustPlatform {
    cargo = rustToolchain;
    rustc = rustToolchain;
  };
  workspace = (builtins.fromTOML (builtins.readFile ../Cargo.toml)).workspace.package;
in
rustPlatform.buildRustPackage {
  pname = "compose";
  inherit (workspace) version;
  inherit src;
  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [
    "-p"
    "compose"
    "-p"
    "compose-hvt"
    "-p"
    "compose-spt"
  ];
  # The unit tests; the end-to-end suites (taps, KVM, a browser) are the flake's checks.
  cargoTestFlags = [
    "-p"
    "compose"
    "--lib"
  ];
  nativeBuildInputs = [ makeWrapper ];
  postInstall = ''
    mkdir -p $out/share/compose
    cp -R ${src}/. $out/share/compose/
    wrapProgram $out/bin/compose \
      --set-default COMPOSE_ROOT $out/share/compose \
      --set-default COMPOSE_TENDER_DIR $out/bin \
      --prefix PATH : ${
        lib.makeBinPath [
          rustToolchain
          stdenv.cc
        ]
      }
  '';
  passthru = { inherit rustToolchain; };
  meta = {
    description = "Declarative build system and image composer for Rust unikernels";
    longDescription = ''
      compose turns a small KDL spec of a unikernel (its devices and its application) into
      a checked, typed device graph, generates the Rust glue that wires them, and builds a
      reproducible image for unix, Solo5 hvt or Solo5 spt into a content-addressed store,
      with a deployment manifest, an SBOM and a signable bundle.
    '';
    license = with lib.licenses; [
      mit
      asl20
    ];
    mainProgram = "compose";
    platforms = [ "x86_64-linux" ];
  };
}
