# The consumer-facing builders, for one package set: `buildImage` (an image as an ordinary,
# sandboxed, offline derivation) and `mkRunner` (a program that launches one).
{
  lib,
  pkgs,
  # The compose package (nix/package.nix).
  compose,
}:
let
  # The crates of all the given lock files, in cargo's directory-source layout.
  vendorCrates =
    lockFiles:
    let
      dirs = map (lockFile: pkgs.rustPlatform.importCargoLock { inherit lockFile; }) lockFiles;
    in
    if builtins.length dirs == 1 then
      builtins.head dirs
    else
      pkgs.symlinkJoin {
        name = "compose-vendored-crates";
        paths = dirs;
      };

  # `args` on the command line: NAME=VALUE, one a line.
  argLines = args: lib.concatStringsSep "\n" (lib.mapAttrsToList (k: v: "${k}=${toString v}") args);
in
rec {
  # buildImage { spec = ./site.kdl; target = "hvt"; }
  # The result is compose's store entry, unchanged: the image, manifest.json/.kdl,
  # buildinfo.json, sbom.cdx.json and the bundle; `compose verify` checks it.
  buildImage =
    {
      spec,
      src ? dirOf spec,
      target,
      name ? "${lib.removeSuffix ".kdl" (baseNameOf spec)}-${target}",
      args ? { },
      # Lock files of the application's own crates, beside compose's.
      cargoLocks ? [ ],
      # The spec is one of compose's own examples (src is compose's tree, specs/...).
      composeRootFromSrc ? false,
    }:
    let
      srcText = toString src;
      specText = toString spec;
    in
    assert lib.assertMsg (lib.hasPrefix "${srcText}/" specText)
      "compose.lib.buildImage: the spec ${specText} is not inside src ${srcText}";
    pkgs.stdenv.mkDerivation {
      inherit name src;
      specFile = lib.removePrefix "${srcText}/" specText;
      composeTarget = target;
      composeArgs = argLines args;
      # compose's own lock file from the source (not from the package: no import from derivation).
      cargoVendorDir = vendorCrates ([ ../Cargo.lock ] ++ cargoLocks);
      composeBin = lib.getExe compose;
      composeRootFromSrc = if composeRootFromSrc then "1" else "";
      nativeBuildInputs = [ compose ];
      dontUnpack = true;
      dontConfigure = true;
      buildPhase = ''
        runHook preBuild
        bash ${./build-image.sh}
        runHook postBuild
      '';
      dontInstall = true;
      # The entry's manifest records the hashes of its files: nothing may touch them.
      dontFixup = true;
      dontStrip = true;
      dontPatchELF = true;
      passthru = { inherit target; };
    };

  # mkRunner { image = buildImage { ... }; nets.service = "tap0"; bootArgs = [ "--port=80" ]; }
  # gives bin/NAME-run, the launch command `compose deploy` renders (so an unmapped device
  # fails here, at build time); extra arguments are passed on as boot arguments.
  mkRunner =
    {
      image,
      nets ? { },
      blocks ? { },
      secrets ? { },
      bootArgs ? [ ],
      name ? lib.removeSuffix "-${image.target or ""}" image.name,
    }:
    let
      target = image.target or (throw "compose.lib.mkRunner: the image has no `target`");
      flag =
        f: attrs:
        lib.concatStringsSep " " (
          lib.mapAttrsToList (k: v: "${f} ${lib.escapeShellArg "${k}=${toString v}"}") attrs
        );
      secretFlags = lib.concatStringsSep " " (
        lib.mapAttrsToList (k: v: "--secret ${lib.escapeShellArg "${k}=@${toString v}"}") secrets
      );
    in
    pkgs.runCommand "${name}-runner"
      {
        nativeBuildInputs = [ compose ];
        passthru = { inherit image; };
        meta.mainProgram = "${name}-run";
      }
      ''
        mkdir -p $out/bin
        ${
          if target == "unix" then
            # A unix image is a host program: `compose run RESULT` launches it with its
            # devices mapped and checked against the manifest.
            ''
              line="${lib.getExe compose} run ${image} ${flag "--net" nets} ${flag "--block" blocks} ${secretFlags} -- ${lib.escapeShellArgs bootArgs}"
            ''
          else
            ''
              # The tender and its arguments (or `compose run RESULT` when the image
              # declares secrets), checked against the manifest: an unmapped device fails here.
              line=$(compose deploy ${image} --format solo5 ${flag "--net" nets} ${flag "--block" blocks} ${secretFlags} -- ${lib.escapeShellArgs bootArgs})
            ''
        }
        {
          echo '#!${pkgs.runtimeShell}'
          echo "# The launch command of ${image}, rendered by compose deploy."
          echo "exec $line \"\$@\""
        } > $out/bin/${name}-run
        chmod +x $out/bin/${name}-run
      '';
}
