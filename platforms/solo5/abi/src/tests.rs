//! Layout and encoder tests. Sizes and offsets are also pinned at compile time.

use super::*;

#[test]
fn abi_note_bytes_are_exact() {
    let b = abi1_note_bytes(AbiTarget::Hvt);
    assert_eq!(
        b,
        [
            6, 0, 0, 0, // namesz
            16, 0, 0, 0, // descsz
            b'A', b'B', b'I', b'1', // type
            b'S', b'o', b'l', b'o', b'5', 0, 0, 0, // name
            1, 0, 0, 0, // hvt
            2, 0, 0, 0, // version 2
            0, 0, 0, 0, 0, 0, 0, 0, // reserved
        ]
    );
    let spt = abi1_note_bytes(AbiTarget::Spt);
    assert_eq!(spt[20], 2);
    assert_eq!(spt[24], 2);
    assert_eq!(NOTE_TYPE_MFT1.to_le_bytes(), *b"MFT1");
}

#[test]
fn abi_note_struct_matches_bytes() {
    let n = Abi1Note::new(AbiTarget::Hvt);
    assert_eq!(n.header.descsz, 16);
    assert_eq!(n.info.abi_target, 1);
    let h = NoteHeader::decode(&abi1_note_bytes(AbiTarget::Hvt)).unwrap();
    assert!(h.is_solo5());
    assert_eq!(h, n.header);
    assert_eq!(
        Abi1Info::decode(&abi1_note_bytes(AbiTarget::Hvt)[20..]).unwrap(),
        n.info
    );
}

#[test]
fn manifest_note_bytes_are_exact() {
    let devs = [MftDevice::net("service"), MftDevice::block("storage")];
    let mut buf = [0xAAu8; 512];
    let n = encode_mft1_note(&devs, &mut buf).unwrap();
    assert_eq!(n, 32 + 104 * 3);
    assert_eq!(n, mft1_note_size(2));
    let b = &buf[..n];
    // Header.
    assert_eq!(&b[0..4], &6u32.to_le_bytes());
    assert_eq!(&b[4..8], &(4 + 8 + 3 * 104u32).to_le_bytes());
    assert_eq!(&b[8..12], b"MFT1");
    assert_eq!(&b[12..20], b"Solo5\0\0\0");
    // Pad, then the mft header.
    assert_eq!(&b[20..24], &[0; 4]);
    assert_eq!(&b[24..28], &1u32.to_le_bytes());
    assert_eq!(&b[28..32], &3u32.to_le_bytes());
    // Entry 0: reserved, empty name.
    let e0 = &b[32..136];
    assert_eq!(e0[0], 0);
    assert_eq!(&e0[68..72], &MFT_RESERVED_FIRST.to_le_bytes());
    assert!(e0[72..].iter().all(|&x| x == 0));
    // Entry 1: net "service".
    let e1 = &b[136..240];
    assert_eq!(&e1[..8], b"service\0");
    assert!(e1[8..68].iter().all(|&x| x == 0));
    assert_eq!(&e1[68..72], &2u32.to_le_bytes());
    assert!(e1[72..].iter().all(|&x| x == 0));
    // Entry 2: block "storage".
    let e2 = &b[240..344];
    assert_eq!(&e2[..8], b"storage\0");
    assert_eq!(&e2[68..72], &1u32.to_le_bytes());
    // Untouched beyond.
    assert_eq!(buf[n], 0xAA);
}

#[test]
fn manifest_note_struct_matches_encoder() {
    static NOTE: Mft1Note<3> =
        Mft1Note::new(&[MftDevice::net("service"), MftDevice::block("storage")]);
    let mut buf = [0u8; 512];
    let n = encode_mft1_note(
        &[MftDevice::net("service"), MftDevice::block("storage")],
        &mut buf,
    )
    .unwrap();
    assert_eq!(size_of_val(&NOTE), n);
    assert_eq!(NOTE.header.to_bytes(), buf[..20]);
    assert_eq!(NOTE.mft.header.entries, 3);
    for (i, e) in NOTE.mft.entries.iter().enumerate() {
        let at = 32 + i * 104;
        assert_eq!(e.to_bytes(), buf[at..at + 104], "entry {i}");
        assert_eq!(MftEntry::decode(&buf[at..]).unwrap(), *e);
    }
}

#[test]
fn empty_manifest_has_only_the_reserved_entry() {
    let mut buf = [0u8; 200];
    assert_eq!(encode_mft1_note(&[], &mut buf), Ok(136));
    let note: Mft1Note<1> = Mft1Note::new(&[]);
    assert_eq!(note.mft.entries[0], MftEntry::RESERVED);
    assert_eq!(note.header.descsz, 4 + 8 + 104);
}

#[test]
fn encoder_rejects_bad_device_lists() {
    let mut buf = [0u8; 8192];
    let long = "a".repeat(68);
    let max = "b".repeat(67);
    let cases: [(&[MftDevice<'_>], ManifestEncodeError); 4] = [
        (&[MftDevice::net("")], ManifestEncodeError::EmptyName),
        (&[MftDevice::net(&long)], ManifestEncodeError::NameTooLong),
        (
            &[MftDevice::block("my-disk")],
            ManifestEncodeError::NameNotAlphanumeric,
        ),
        (
            &[MftDevice::block("x"), MftDevice::net("x")],
            ManifestEncodeError::DuplicateName,
        ),
    ];
    for (devs, err) in cases {
        assert_eq!(encode_mft1_note(devs, &mut buf), Err(err));
    }
    assert!(encode_mft1_note(&[MftDevice::net(&max)], &mut buf).is_ok());

    let mut many = [MftDevice::net("x"); 64];
    let storage: [[u8; 3]; 64] =
        core::array::from_fn(|i| [b'd', b'0' + (i / 10) as u8, b'0' + (i % 10) as u8]);
    for (d, s) in many.iter_mut().zip(storage.iter()) {
        d.name = core::str::from_utf8(s).unwrap();
    }
    assert_eq!(
        encode_mft1_note(&many, &mut buf),
        Err(ManifestEncodeError::TooManyDevices)
    );
    assert_eq!(encode_mft1_note(&many[..63], &mut buf), Ok(32 + 64 * 104));
    assert_eq!(
        encode_mft1_note(&many[..2], &mut buf[..100]),
        Err(ManifestEncodeError::BufferTooSmall)
    );
}

#[test]
fn entry_accessors_round_trip() {
    let mut e = MftEntry::device("disk0", DeviceType::Block);
    assert_eq!(e.name_str(), Some("disk0"));
    assert_eq!(e.device_type(), Some(DeviceType::Block));
    e.set_block_info(1 << 20, 4096);
    assert_eq!(e.block_info(), (1 << 20, 4096));
    let bytes = e.to_bytes();
    assert_eq!(&bytes[72..80], &(1u64 << 20).to_le_bytes());
    assert_eq!(&bytes[80..82], &4096u16.to_le_bytes());
    e.set_net_info([2, 1, 2, 3, 4, 5], 1500);
    assert_eq!(e.net_info(), ([2, 1, 2, 3, 4, 5], 1500));
    assert_eq!(&e.to_bytes()[78..80], &1500u16.to_le_bytes());
    e.set_hostfd(-1);
    assert_eq!(e.hostfd(), -1);
    assert_eq!(e.b, 0xffff_ffff);
    e.attached = 1;
    assert_eq!(e.to_bytes()[96], 1);
}

#[test]
fn hvt_constants() {
    use hvt::*;
    assert_eq!(Hypercall::Walltime.port(), 0x501);
    assert_eq!(Hypercall::Halt.port(), 0x508);
    assert_eq!(Hypercall::from_port(0x505), Some(Hypercall::BlockRead));
    assert_eq!(Hypercall::from_port(0x500), None);
    assert_eq!(Hypercall::from_port(0x509), None);
    assert_eq!(Hypercall::from_port(0x10), None);
    for h in Hypercall::ALL {
        assert_eq!(Hypercall::from_nr(h.nr()), Some(h));
    }
    assert_eq!(Hypercall::Poll.arg_size(), 24);
    assert_eq!(BOOT_INFO_GPA, 0x10000);
    assert_eq!(MFT_GPA, 0x10038);
    assert_eq!(cmdline_gpa(2), 0x10038 + 8 + 208);
    let bi = HvtBootInfo {
        mem_size: 1,
        net_ring: 0x1122334455667788,
        ..Default::default()
    };
    let b = bi.to_bytes();
    assert_eq!(b[0], 1);
    assert_eq!(&b[48..], &0x1122334455667788u64.to_le_bytes());
}

#[test]
fn exit_codes() {
    assert_eq!(exit_code_for_status(7), 7);
    assert_eq!(exit_code_for_status(SOLO5_EXIT_ABORT), 255);
    assert_eq!(exit_code_for_status(256), 0);
    assert_eq!(exit_code_for_status(-1), 255);
}
