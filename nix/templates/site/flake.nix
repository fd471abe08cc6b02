{
  description = "A static website as a unikernel, built and run with compose";

  inputs = {
    # Where you get compose from: replace with its repository (or a path: URL to a checkout).
    compose.url = "github:OWNER/compose";
    nixpkgs.follows = "compose/nixpkgs";
  };

  outputs =
    {
      self,
      nixpkgs,
      compose,
    }:
    let
      system = "x86_64-linux";
      image =
        target:
        compose.lib.buildImage {
          inherit system target;
          spec = ./site.kdl;
          # src defaults to the spec's directory: site.kdl and public/.
        };
    in
    {
      packages.${system} = {
        default = image "hvt";
        site-unix = image "unix";
        site-spt = image "spt";
        # nix run .#runner: the site on spt (a tap named tap0 must exist).
        runner = compose.lib.mkRunner {
          inherit system;
          image = image "spt";
          nets.service = "tap0";
          bootArgs = [
            "--ipv4=10.0.0.2/24"
            "--port=80"
          ];
        };
      };

      # A NixOS machine that serves the site on hvt behind the tap tap-site.
      nixosConfigurations.example = nixpkgs.lib.nixosSystem {
        inherit system;
        modules = [
          compose.nixosModules.default
          {
            boot.isContainer = true;
            system.stateVersion = "25.05";
            services.compose.unikernels.site = {
              image = image "hvt";
              nets.service = "tap-site";
              bootArgs = [
                "--ipv4=10.0.0.2/24"
                "--port=80"
              ];
            };
            networking.interfaces.tap-site.ipv4.addresses = [
              {
                address = "10.0.0.1";
                prefixLength = 24;
              }
            ];
          }
        ];
      };
    };
}
