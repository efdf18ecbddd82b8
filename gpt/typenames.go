package gpt

// typeNames names well-known partition type GUIDs, as a sysadmin would
// call them.
var typeNames = map[GUID]string{
	MustParseGUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B"): "EFI System",
	MustParseGUID("EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"): "Basic Data",
	MustParseGUID("AA31E02A-400F-11DB-9590-000C2911D1B8"): "VMFS",
	MustParseGUID("9D275380-40AD-11DB-BF97-000C2911D1B8"): "vmkDiagnostic",
	MustParseGUID("4EB2EA39-7855-4790-A79E-FAE495E21F8D"): "VMFS-L",
	MustParseGUID("9198EFFC-31C0-11DB-8F78-000C2911D1B8"): "VMware reserved",
	MustParseGUID("381CFCCC-7288-11E0-92EE-000C2911D0B2"): "VMware vSAN",
	MustParseGUID("21686148-6449-6E6F-744E-656564454649"): "BIOS boot",
	MustParseGUID("024DEE41-33E7-11D3-9D69-0008C781F39F"): "MBR partition scheme",
	MustParseGUID("E3C9E316-0B5C-4DB8-817D-F92DF00215AE"): "Microsoft reserved",
	MustParseGUID("DE94BBA4-06D1-4D40-A16A-BFD50179D6AC"): "Windows recovery",
	MustParseGUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4"): "Linux filesystem",
	MustParseGUID("0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"): "Linux swap",
	MustParseGUID("E6D6D379-F507-44C2-A23C-238F2A3DF928"): "Linux LVM",
	MustParseGUID("A19D880F-05FC-4D3B-A006-743F0F84911E"): "Linux RAID",
	MustParseGUID("4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"): "Linux root (x86-64)",
	MustParseGUID("933AC7E1-2EB4-4F13-B844-0E14E2AEF915"): "Linux /home",
	MustParseGUID("BC13C2FF-59E6-4262-A352-B275FD6F7172"): "Linux /boot (XBOOTLDR)",
	MustParseGUID("48465300-0000-11AA-AA11-00306543ECAC"): "Apple HFS+",
	MustParseGUID("7C3457EF-0000-11AA-AA11-00306543ECAC"): "Apple APFS",
	MustParseGUID("516E7CB4-6ECF-11D6-8FF8-00022D09712B"): "FreeBSD",
}

// TypeName returns a readable name for a partition type GUID: the usual
// name of a well-known type, "unused" for the zero GUID, else the GUID.
func TypeName(g GUID) string {
	if g.IsZero() {
		return "unused"
	}
	if n, ok := typeNames[g]; ok {
		return n
	}
	return g.String()
}
