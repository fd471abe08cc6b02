# The builder of `lib.buildImage` (nix/build-image.sh) as a real Nix derivation, without
# nixpkgs: the `derivation` builtin, with the host's toolchain, compose and vendored crates
# bound into the sandbox (tests/nix.rs passes their paths). This is what runs on machines
# whose Nix is too old for nixpkgs' lib; the flake's buildImage runs the same script.
{
  # The compose source tree (copied into the Nix store, filtered to what git tracks).
  src,
  # Host paths, bound into the build sandbox.
  toolchainBin,
  composeBin,
  cargoVendorDir,
  spec ? "specs/hello.kdl",
  target ? "unix",
  args ? "",
  system ? builtins.currentSystem,
}:
derivation {
  name = "${builtins.replaceStrings [ ".kdl" ] [ "" ] (baseNameOf spec)}-${target}";
  inherit system;
  builder = "/bin/bash";
  args = [ ../build-image.sh ];
  src = builtins.path {
    path = src;
    name = "compose-source";
  };
  specFile = spec;
  composeTarget = target;
  composeArgs = args;
  inherit composeBin cargoVendorDir;
  composeRootFromSrc = "1";
  PATH = "${toolchainBin}:/usr/bin:/bin";
}
