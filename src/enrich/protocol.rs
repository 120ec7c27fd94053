//! Names of IP protocol numbers: ECS `network.transport` and `network.iana_number` strings
//! (the numbers themselves, and reading them from tuples, are the format's:
//! [`crate::flowlog::protocol`]).

/// ECS `network.transport` for an IANA protocol number: the IANA keyword in lower case
/// (`tcp`, `udp`, `icmp`, `ipv6-icmp`, `gre`, `esp`, …), or `None` for numbers without a
/// keyword (unassigned, experimental, "any ..." placeholders).
pub const fn transport_name(number: u8) -> Option<&'static str> {
    Some(match number {
        0 => "hopopt",
        1 => "icmp",
        2 => "igmp",
        3 => "ggp",
        4 => "ipv4",
        5 => "st",
        6 => "tcp",
        7 => "cbt",
        8 => "egp",
        9 => "igp",
        10 => "bbn-rcc-mon",
        11 => "nvp-ii",
        12 => "pup",
        13 => "argus",
        14 => "emcon",
        15 => "xnet",
        16 => "chaos",
        17 => "udp",
        18 => "mux",
        19 => "dcn-meas",
        20 => "hmp",
        21 => "prm",
        22 => "xns-idp",
        23 => "trunk-1",
        24 => "trunk-2",
        25 => "leaf-1",
        26 => "leaf-2",
        27 => "rdp",
        28 => "irtp",
        29 => "iso-tp4",
        30 => "netblt",
        31 => "mfe-nsp",
        32 => "merit-inp",
        33 => "dccp",
        34 => "3pc",
        35 => "idpr",
        36 => "xtp",
        37 => "ddp",
        38 => "idpr-cmtp",
        39 => "tp++",
        40 => "il",
        41 => "ipv6",
        42 => "sdrp",
        43 => "ipv6-route",
        44 => "ipv6-frag",
        45 => "idrp",
        46 => "rsvp",
        47 => "gre",
        48 => "dsr",
        49 => "bna",
        50 => "esp",
        51 => "ah",
        52 => "i-nlsp",
        53 => "swipe",
        54 => "narp",
        55 => "min-ipv4",
        56 => "tlsp",
        57 => "skip",
        58 => "ipv6-icmp",
        59 => "ipv6-nonxt",
        60 => "ipv6-opts",
        62 => "cftp",
        64 => "sat-expak",
        65 => "kryptolan",
        66 => "rvd",
        67 => "ippc",
        69 => "sat-mon",
        70 => "visa",
        71 => "ipcv",
        72 => "cpnx",
        73 => "cphb",
        74 => "wsn",
        75 => "pvp",
        76 => "br-sat-mon",
        77 => "sun-nd",
        78 => "wb-mon",
        79 => "wb-expak",
        80 => "iso-ip",
        81 => "vmtp",
        82 => "secure-vmtp",
        83 => "vines",
        84 => "ttp",
        85 => "nsfnet-igp",
        86 => "dgp",
        87 => "tcf",
        88 => "eigrp",
        89 => "ospfigp",
        90 => "sprite-rpc",
        91 => "larp",
        92 => "mtp",
        93 => "ax.25",
        94 => "ipip",
        95 => "micp",
        96 => "scc-sp",
        97 => "etherip",
        98 => "encap",
        100 => "gmtp",
        101 => "ifmp",
        102 => "pnni",
        103 => "pim",
        104 => "aris",
        105 => "scps",
        106 => "qnx",
        107 => "a/n",
        108 => "ipcomp",
        109 => "snp",
        110 => "compaq-peer",
        111 => "ipx-in-ip",
        112 => "vrrp",
        113 => "pgm",
        115 => "l2tp",
        116 => "ddx",
        117 => "iatp",
        118 => "stp",
        119 => "srp",
        120 => "uti",
        121 => "smp",
        122 => "sm",
        123 => "ptp",
        124 => "isis",
        125 => "fire",
        126 => "crtp",
        127 => "crudp",
        128 => "sscopmce",
        129 => "iplt",
        130 => "sps",
        131 => "pipe",
        132 => "sctp",
        133 => "fc",
        134 => "rsvp-e2e-ignore",
        135 => "mobility-header",
        136 => "udplite",
        137 => "mpls-in-ip",
        138 => "manet",
        139 => "hip",
        140 => "shim6",
        141 => "wesp",
        142 => "rohc",
        143 => "ethernet",
        144 => "aggfrag",
        145 => "nsh",
        146 => "homa",
        147 => "bit-emu",
        _ => return None,
    })
}

/// `network.transport` with a fallback: the keyword when there is one, else the decimal
/// number (so the field is never absent and never made up).
pub fn transport_name_or_number(number: u8) -> &'static str {
    match transport_name(number) {
        Some(name) => name,
        None => iana_number_str(number),
    }
}

/// ECS `network.iana_number` (a string field): the decimal number, without allocating.
pub fn iana_number_str(number: u8) -> &'static str {
    IANA_NUMBER_STR[number as usize]
}

static IANA_NUMBER_STR: [&str; 256] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31", "32",
    "33", "34", "35", "36", "37", "38", "39", "40", "41", "42", "43", "44", "45", "46", "47", "48",
    "49", "50", "51", "52", "53", "54", "55", "56", "57", "58", "59", "60", "61", "62", "63", "64",
    "65", "66", "67", "68", "69", "70", "71", "72", "73", "74", "75", "76", "77", "78", "79", "80",
    "81", "82", "83", "84", "85", "86", "87", "88", "89", "90", "91", "92", "93", "94", "95", "96",
    "97", "98", "99", "100", "101", "102", "103", "104", "105", "106", "107", "108", "109", "110",
    "111", "112", "113", "114", "115", "116", "117", "118", "119", "120", "121", "122", "123",
    "124", "125", "126", "127", "128", "129", "130", "131", "132", "133", "134", "135", "136",
    "137", "138", "139", "140", "141", "142", "143", "144", "145", "146", "147", "148", "149",
    "150", "151", "152", "153", "154", "155", "156", "157", "158", "159", "160", "161", "162",
    "163", "164", "165", "166", "167", "168", "169", "170", "171", "172", "173", "174", "175",
    "176", "177", "178", "179", "180", "181", "182", "183", "184", "185", "186", "187", "188",
    "189", "190", "191", "192", "193", "194", "195", "196", "197", "198", "199", "200", "201",
    "202", "203", "204", "205", "206", "207", "208", "209", "210", "211", "212", "213", "214",
    "215", "216", "217", "218", "219", "220", "221", "222", "223", "224", "225", "226", "227",
    "228", "229", "230", "231", "232", "233", "234", "235", "236", "237", "238", "239", "240",
    "241", "242", "243", "244", "245", "246", "247", "248", "249", "250", "251", "252", "253",
    "254", "255",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_names() {
        assert_eq!(transport_name(6), Some("tcp"));
        assert_eq!(transport_name(17), Some("udp"));
        assert_eq!(transport_name(1), Some("icmp"));
        assert_eq!(transport_name(58), Some("ipv6-icmp"));
        assert_eq!(transport_name(47), Some("gre"));
        assert_eq!(transport_name(50), Some("esp"));
        assert_eq!(transport_name(51), Some("ah"));
        assert_eq!(transport_name(132), Some("sctp"));
        assert_eq!(transport_name(2), Some("igmp"));
        assert_eq!(transport_name(4), Some("ipv4"));
        assert_eq!(transport_name(41), Some("ipv6"));
        assert_eq!(transport_name(89), Some("ospfigp"));
        assert_eq!(transport_name(112), Some("vrrp"));
        assert_eq!(transport_name(136), Some("udplite"));
        for none in [61u8, 63, 68, 99, 114, 148, 200, 252, 253, 254, 255] {
            assert_eq!(transport_name(none), None, "{none}");
        }
        assert_eq!(transport_name_or_number(6), "tcp");
        assert_eq!(transport_name_or_number(253), "253");
    }

    #[test]
    fn names_are_lower_case_keywords() {
        for n in 0..=255u8 {
            if let Some(name) = transport_name(n) {
                assert!(!name.is_empty());
                assert!(
                    name.bytes()
                        .all(|b| !b.is_ascii_uppercase() && b != b' ' && b != b','),
                    "{n}: {name:?}"
                );
            }
        }
    }

    #[test]
    fn number_strings_match_numbers() {
        for n in 0..=255u8 {
            assert_eq!(iana_number_str(n), n.to_string());
        }
    }
}
