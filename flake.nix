{
  description = "compose: a declarative build system and image composer for Rust unikernels";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    flake-utils.url = "github:numtide/flake-utils";
  };

  outputs = { self, nixpkgs, flake-utils }:
    flake-utils.lib.eachSystem [ "x86_64-linux" "aarch64-linux" ] (system:
      let
        pkgs = nixpkgs.legacyPackages.${system};
        compose = pkgs.rustPlatform.buildRustPackage {
          pname = "compose";
          version = "0.1.0";
          src = pkgs.lib.cleanSource ./.;
          cargoLock.lockFile = ./Cargo.lock;
          cargoBuildFlags = [ "-p" "compose" ];
          # The end-to-end tests build unikernels with cargo, which the sandbox has no
          # registry for; the unit tests run.
          cargoTestFlags = [ "-p" "compose" "--lib" ];
          # compose generates crates that depend on the device and platform crates of this
          # source tree: point it at the store copy.
          postInstall = ''
            mkdir -p $out/share/compose
            cp -r devices platforms templates Cargo.toml Cargo.lock rust-toolchain.toml $out/share/compose/
            wrapProgram $out/bin/compose --set-default COMPOSE_ROOT $out/share/compose
          '';
          nativeBuildInputs = [ pkgs.makeWrapper ];
          meta.mainProgram = "compose";
        };
      in {
        packages.default = compose;
        apps.default = flake-utils.lib.mkApp { drv = compose; };
        devShells.default = pkgs.mkShell {
          packages = [ pkgs.rustup pkgs.cargo-nextest pkgs.qemu ];
        };
      });
}
