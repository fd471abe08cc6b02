{
  description = "compose: a declarative build system and image composer for Rust unikernels";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";
    # The toolchain rust-toolchain.toml pins, with its targets (x86_64-unknown-none for the
    # Solo5 guests), which nixpkgs' rustc lacks.
    rust-overlay = {
      url = "github:oxalica/rust-overlay";
      inputs.nixpkgs.follows = "nixpkgs";
    };
  };

  outputs =
    {
      self,
      nixpkgs,
      rust-overlay,
    }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f (pkgsFor system));

      pkgsFor =
        system:
        import nixpkgs {
          inherit system;
          overlays = [ rust-overlay.overlays.default ];
        };

      # What building compose and its images reads: the workspace, without build products.
      src = lib.fileset.toSource {
        root = ./.;
        fileset = lib.fileset.difference (lib.fileset.unions [
          ./Cargo.toml
          ./Cargo.lock
          ./rust-toolchain.toml
          ./composer
          ./devices
          ./platforms
          ./templates
          ./specs
          ./tests
          ./benches
          ./docs
        ]) (lib.fileset.unions [
          (lib.fileset.maybeMissing ./specs/_build)
          (lib.fileset.maybeMissing ./target)
        ]);
      };

      # The per-package-set library, crane-style: (compose.lib.mkLib pkgs).buildImage { ... }.
      mkLib =
        pkgs:
        let
          pkgs' = if pkgs ? rust-bin then pkgs else pkgs.extend rust-overlay.overlays.default;
        in
        import ./nix/lib.nix {
          inherit lib;
          pkgs = pkgs';
          compose = composeFor pkgs';
        };

      composeFor =
        pkgs:
        pkgs.callPackage ./nix/package.nix {
          inherit src;
          rustToolchain = pkgs.rust-bin.fromRustupToolchainFile ./rust-toolchain.toml;
        };

      # The repository's own examples, as images.
      examples =
        pkgs:
        let
          l = mkLib pkgs;
          image =
            spec: target:
            l.buildImage {
              inherit src target;
              spec = "${src}/specs/${spec}.kdl";
              composeRootFromSrc = true;
            };
        in
        lib.listToAttrs (
          lib.concatMap
            (
              spec:
              map (target: lib.nameValuePair "${spec}-${target}" (image spec target)) [
                "unix"
                "spt"
                "hvt"
              ]
            )
            [
              "hello"
              "echo"
              "site"
            ]
        );
    in
    {
      packages = forAllSystems (
        pkgs:
        let
          compose = composeFor pkgs;
        in
        {
          inherit compose;
          default = compose;
        }
      );

      # lib.buildImage { spec, src ? dirOf spec, target, name ? ..., args ? { }, cargoLocks ? [ ] }
      # and lib.mkRunner { image, nets ? { }, blocks ? { }, secrets ? { }, bootArgs ? [ ] },
      # for `system` (default x86_64-linux); lib.mkLib pkgs gives both for any package set.
      lib = {
        inherit mkLib;
        buildImage =
          {
            system ? "x86_64-linux",
            ...
          }@args:
          (mkLib (pkgsFor system)).buildImage (removeAttrs args [ "system" ]);
        mkRunner =
          {
            system ? "x86_64-linux",
            ...
          }@args:
          (mkLib (pkgsFor system)).mkRunner (removeAttrs args [ "system" ]);
      };

      nixosModules.default =
        { pkgs, lib, ... }:
        {
          imports = [ ./nix/module.nix ];
          services.compose.package = lib.mkDefault (composeFor (pkgs.extend rust-overlay.overlays.default));
        };

      checks = forAllSystems (
        pkgs:
        let
          compose = composeFor pkgs;
          l = mkLib pkgs;
          images = examples pkgs;
          verify =
            name: image:
            pkgs.runCommand "verify-${name}" { nativeBuildInputs = [ compose ]; } ''
              compose verify --no-trust ${image}
              touch $out
            '';
          boot =
            target: extra:
            pkgs.runCommand "boot-hello-${target}" extra ''
              ${lib.getExe (l.mkRunner { image = images."hello-${target}"; })} --name=nix --times=1 > log
              cat log
              grep -q "Hello, nix" log
              touch $out
            '';
        in
        {
          inherit compose;
          boot-hello-spt = boot "spt" { };
          boot-hello-hvt = boot "hvt" { requiredSystemFeatures = [ "kvm" ]; };
          module-serves-site = pkgs.testers.runNixOSTest {
            name = "compose-module-site";
            nodes.machine = {
              imports = [ self.nixosModules.default ];
              services.compose.unikernels.site = {
                image = images.site-unix;
                bootArgs = [ "--port=8080" ];
              };
              environment.systemPackages = [ pkgs.curl ];
            };
            testScript = ''
              machine.wait_for_unit("compose-site.service")
              machine.wait_until_succeeds("curl -fsS http://127.0.0.1:8080/ | grep -i html", timeout=60)
            '';
          };
        }
        // lib.mapAttrs' (n: v: lib.nameValuePair "image-${n}" v) images
        // lib.mapAttrs' (n: v: lib.nameValuePair "verify-${n}" (verify n v)) images
      );

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            (pkgs.rust-bin.fromRustupToolchainFile ./rust-toolchain.toml)
            pkgs.iproute2
            pkgs.chromium
          ];
        };
      });

      templates.default = {
        path = ./nix/templates/site;
        description = "A static website as a unikernel, built with compose.lib.buildImage and run by the NixOS module";
      };

      formatter = forAllSystems (pkgs: pkgs.nixfmt);
    };
}
