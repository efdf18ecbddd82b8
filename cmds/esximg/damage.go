package main

import (
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/esxi-rescue/rescue/esxi"
)

func damage(args []string, stdout, stderr io.Writer) error {
	var modes []string
	for m, what := range esxi.DamageModes {
		modes = append(modes, fmt.Sprintf("  %-15s %s", m, what))
	}
	sort.Strings(modes)
	fs := newFlags("damage", "-mode MODE [-size SIZE] [-sector 0|512|4096] [-f] SRC [DST]", `Damages an ESXi disk image the way the field does. With DST, SRC is copied
to DST first (sparsely: only data regions are read and written) and DST is
damaged; without, SRC itself is damaged in place. The GPT bytes are written
by esximg itself, not by the project's gpt package or go-diskfs.

Modes:
`+strings.Join(modes, "\n")+`

-size is the new disk size for windows, stale-backup and shrunk (default:
1 GiB larger, resp. smaller, than SRC).`, stderr)
	mode := fs.String("mode", "", "damage mode (see above)")
	size := fs.String("size", "", "size of the damaged disk (K, M, G, T are binary units)")
	sector := fs.Int("sector", 0, "logical sector size; 0 detects it from the primary GPT header's position")
	force := fs.Bool("f", false, "overwrite DST if it exists")
	rest, err := parse(fs, args, 1, 2)
	if err != nil {
		return err
	}
	if *mode == "" {
		fmt.Fprintln(stderr, "esximg damage: -mode is required")
		fs.Usage()
		return errUsage
	}
	opt := esxi.DamageOptions{SectorSize: *sector, Overwrite: *force}
	if *size != "" {
		if opt.Size, err = esxi.ParseSize(*size); err != nil {
			return err
		}
	}
	target := rest[0]
	if len(rest) == 2 {
		opt.Source, target = rest[0], rest[1]
	}
	if err := esxi.Damage(target, *mode, opt); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: damaged (%s)\n", target, *mode)
	return nil
}
