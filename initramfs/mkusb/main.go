// Command mkusb writes the rescue USB stick image: GPT, one FAT32 EFI system
// partition with the given files, and optionally GRUB's legacy-BIOS boot code.
//
//	mkusb -o rescue-usb.img [-size MiB] [-label RESCUE] [-grub-boot boot.img -grub-core core.img] DST=SRC...
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/esxi-rescue/rescue/initramfs/usbimg"
)

func main() {
	out := flag.String("o", "", "image file to write (replaced)")
	size := flag.Int64("size", 0, "image size in MiB (0: files plus 40 MiB)")
	label := flag.String("label", "RESCUE", "FAT volume label of the EFI system partition")
	boot := flag.String("grub-boot", "", "GRUB i386-pc boot.img for legacy BIOS boot (with -grub-core)")
	core := flag.String("grub-core", "", "GRUB core.img from grub-mkimage -O i386-pc (with -grub-boot)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), `usage: mkusb -o IMAGE [flags] /PATH/ON/STICK=LOCALFILE...

Writes a GPT disk image with a FAT32 EFI system partition holding the files
given, for dd-ing onto a USB stick. With -grub-boot and -grub-core it also
gets a BIOS boot partition and GRUB's MBR code, so it boots on legacy BIOS.
Same inputs and SOURCE_DATE_EPOCH give the same image bytes.

`)
		flag.PrintDefaults()
	}
	flag.Parse()
	if *out == "" || flag.NArg() == 0 || (*boot == "") != (*core == "") {
		flag.Usage()
		os.Exit(2)
	}
	opt := usbimg.Options{Label: *label, Size: *size << 20}
	var total int64
	for _, a := range flag.Args() {
		dst, src, ok := strings.Cut(a, "=")
		if !ok || !strings.HasPrefix(dst, "/") {
			fmt.Fprintf(os.Stderr, "mkusb: %q: want /PATH/ON/STICK=LOCALFILE\n", a)
			os.Exit(2)
		}
		st, err := os.Stat(src)
		if err != nil {
			fmt.Fprintf(os.Stderr, "mkusb: %v\n", err)
			os.Exit(2)
		}
		total += st.Size()
		opt.Files = append(opt.Files, usbimg.File{Dst: dst, Src: src})
	}
	if opt.Size == 0 {
		opt.Size = total + 40<<20
	}
	if *boot != "" {
		var err error
		if opt.GrubBootImg, err = os.ReadFile(*boot); err == nil {
			opt.GrubCoreImg, err = os.ReadFile(*core)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "mkusb: %v\n", err)
			os.Exit(2)
		}
	}
	if err := usbimg.Build(*out, opt); err != nil {
		fmt.Fprintf(os.Stderr, "mkusb: %v\n", err)
		os.Exit(2)
	}
}
