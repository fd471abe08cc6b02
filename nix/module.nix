# services.compose.unikernels.<name>: one hardened systemd service per unikernel image, each
# launching its image with `compose run RESULT` (no spec, no rebuild): its taps declared,
# /dev/kvm only for hvt, secrets through systemd credentials, restarted on failure.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.services.compose;
  inherit (lib) mkOption types;

  unikernel =
    { name, config, ... }:
    {
      options = {
        image = mkOption {
          type = types.package;
          description = "The image: a result of `compose.lib.buildImage` (a compose store entry).";
        };
        target = mkOption {
          type = types.enum [
            "unix"
            "hvt"
            "spt"
          ];
          default = config.image.target or (throw "services.compose.unikernels.${name}: set `target`");
          defaultText = lib.literalExpression "image.target";
          description = "The image's target (buildImage records it).";
        };
        nets = mkOption {
          type = types.attrsOf types.str;
          default = { };
          example = {
            service = "tap-site";
          };
          description = "Network interfaces of the image, each mapped to a host tap, which is declared.";
        };
        blocks = mkOption {
          type = types.attrsOf types.path;
          default = { };
          description = "Block devices of the image, each mapped to a host file (read and written).";
        };
        secrets = mkOption {
          type = types.attrsOf types.path;
          default = { };
          example = {
            token = "/run/keys/token";
          };
          description = ''
            Secrets of the image, each read from a host file by systemd (LoadCredential) and
            handed to the unikernel from the service's credentials directory; never in the
            Nix store.
          '';
        };
        bootArgs = mkOption {
          type = types.listOf types.str;
          default = [ ];
          example = [ "--port=80" ];
          description = "Boot arguments, checked against the image's declared ones.";
        };
        autoStart = mkOption {
          type = types.bool;
          default = true;
          description = "Start the unikernel at boot.";
        };
      };
    };

  user = name: "compose-${name}";

  command =
    name: u:
    lib.concatStringsSep " " (
      [
        (lib.getExe cfg.package)
        "run"
        "${u.image}"
      ]
      ++ lib.mapAttrsToList (dev: tap: "--net ${lib.escapeShellArg "${dev}=${tap}"}") u.nets
      ++ lib.mapAttrsToList (dev: file: "--block ${lib.escapeShellArg "${dev}=${toString file}"}") u.blocks
      # systemd expands ${CREDENTIALS_DIRECTORY} in ExecStart.
      ++ lib.mapAttrsToList (secret: _: "--secret ${secret}=@\${CREDENTIALS_DIRECTORY}/${secret}") u.secrets
      ++ [ "--" ]
      ++ map lib.escapeShellArg u.bootArgs
    );

  service =
    name: u:
    let
      tapUnits = lib.mapAttrsToList (_: tap: "sys-subsystem-net-devices-${tap}.device") u.nets;
    in
    {
      description = "compose unikernel ${name} (${u.target})";
      wantedBy = lib.optional u.autoStart "multi-user.target";
      after = [ "network.target" ] ++ tapUnits;
      bindsTo = tapUnits;
      serviceConfig = {
        ExecStart = command name u;
        Restart = "on-failure";
        RestartSec = "2s";
        User = user name;
        Group = "compose";
        SupplementaryGroups = lib.optional (u.target == "hvt") "kvm";
        LoadCredential = lib.mapAttrsToList (secret: file: "${secret}:${toString file}") u.secrets;
        CacheDirectory = user name;
        Environment = [ "HOME=/var/cache/${user name}" ];
        # Hardening: only the devices the target needs.
        DevicePolicy = "closed";
        DeviceAllow =
          lib.optional (u.nets != { }) "/dev/net/tun rw" ++ lib.optional (u.target == "hvt") "/dev/kvm rw";
        ReadWritePaths = map toString (lib.attrValues u.blocks);
        NoNewPrivileges = true;
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        SystemCallArchitectures = "native";
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_INET"
          "AF_INET6"
          "AF_NETLINK"
        ];
        UMask = "0077";
      };
    };
in
{
  options.services.compose = {
    package = mkOption {
      type = types.package;
      description = "The compose package (the flake's packages.<system>.compose).";
    };
    unikernels = mkOption {
      type = types.attrsOf (types.submodule unikernel);
      default = { };
      description = "Unikernels to run, one systemd service (compose-NAME) each.";
    };
  };

  config = lib.mkIf (cfg.unikernels != { }) {
    assertions = lib.flatten (
      lib.mapAttrsToList (name: u: [
        {
          assertion = u.target != "hvt" || pkgs.stdenv.hostPlatform.isx86_64;
          message = "services.compose.unikernels.${name}: hvt images run on x86_64 hosts";
        }
        {
          assertion = u.target != "unix" || u.nets == { };
          message = "services.compose.unikernels.${name}: a unix image uses the host's sockets; it takes no taps";
        }
      ]) cfg.unikernels
    );

    users.groups.compose = { };
    users.users = lib.mapAttrs' (
      name: _:
      lib.nameValuePair (user name) {
        isSystemUser = true;
        group = "compose";
      }
    ) cfg.unikernels;

    # The taps, owned by the service's user so that its tender opens them unprivileged.
    networking.interfaces = lib.mkMerge (
      lib.mapAttrsToList (
        name: u:
        lib.genAttrs (lib.attrValues u.nets) (_: {
          virtual = true;
          virtualType = "tap";
          virtualOwner = user name;
        })
      ) cfg.unikernels
    );

    systemd.services = lib.mapAttrs' (
      name: u: lib.nameValuePair "compose-${name}" (service name u)
    ) cfg.unikernels;
  };
}
