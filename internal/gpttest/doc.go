// Package gpttest builds and inspects GPT test fixtures without the gpt
// package: images partitioned by sgdisk, a small hand-written GPT encoder
// and decoder (raw offsets, encoding/binary and hash/crc32 only) for what
// sgdisk cannot make (4096-byte sectors, compacted arrays, junk in unused
// slots, damage), and parsers for what sgdisk, sfdisk and fdisk report.
//
// It is the independent cross-check of the gpt package's reader and
// writer, so it must never import the gpt package (nor esxi, which does).
// Every helper fails the test it is given on error.
package gpttest
