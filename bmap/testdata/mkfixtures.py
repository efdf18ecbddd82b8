#!/usr/bin/env python3
"""Writes the hand-made bmap fixtures of the bmap package's tests (run once).

fixture.img is 5000 bytes with 512-byte blocks (10 blocks, the last one 392
bytes); blocks 0, 3, 4 and 9 hold data. The range and file checksums are
computed here with hashlib exactly like bmap-tools does (BmapCreate.py,
BmapCopy._verify_bmap_checksum), independently of the Go code; the tests also
run `bmaptool copy` with every fixture.
"""
import hashlib

BS, SIZE = 512, 5000
img = bytearray(SIZE)
for blk in (0, 3, 4, 9):
    for o in range(blk * BS, min((blk + 1) * BS, SIZE)):
        img[o] = (o * 7 + blk) % 251 + 1
img[3 * BS + 100:3 * BS + 200] = bytes(100)  # some zeros inside a mapped block
open("fixture.img", "wb").write(img)

def rsum(typ, first, last):
    return hashlib.new(typ, bytes(img[first * BS:min((last + 1) * BS, SIZE)])).hexdigest()

def finish(name, text, typ):
    zeros = "0" * len(hashlib.new(typ).hexdigest())
    data = text.replace("@FILESUM@", zeros)
    data = data.replace(zeros, hashlib.new(typ, data.encode()).hexdigest(), 1)
    open(name, "w").write(data)

HEAD = """<?xml version="1.0" ?>
<!-- A hand-written bmap fixture for the bmap package's tests. -->
<bmap version="%s">
    <ImageSize> 5000 </ImageSize>
    <BlockSize> 512 </BlockSize>
    <BlocksCount> 10 </BlocksCount>
    <MappedBlocksCount> 4 </MappedBlocksCount>
"""

open("v1.2.bmap", "w").write(HEAD % "1.2" + """    <BlockMap>
        <Range> 0 </Range>
        <Range> 3 - 4 </Range>
        <Range>9</Range>
    </BlockMap>
</bmap>
""")

finish("v1.3.bmap", HEAD % "1.3" + """    <BmapFileSHA1> @FILESUM@ </BmapFileSHA1>
    <BlockMap>
        <Range sha1="%s"> 0 </Range>
        <Range sha1="%s"> 3-4 </Range>
        <Range sha1="%s"> 9 </Range>
    </BlockMap>
</bmap>
""" % (rsum("sha1", 0, 0), rsum("sha1", 3, 4), rsum("sha1", 9, 9)), "sha1")

# 1.4 is 2.0 by another name; md5, and one range without a checksum.
finish("v1.4.bmap", HEAD % "1.4" + """    <ChecksumType> md5 </ChecksumType>
    <BmapFileChecksum> @FILESUM@ </BmapFileChecksum>
    <BlockMap>
        <Range chksum="%s"> 0 </Range>
        <Range> 3-4 </Range>
        <Range chksum="%s"> 9 </Range>
    </BlockMap>
</bmap>
""" % (rsum("md5", 0, 0), rsum("md5", 9, 9)), "md5")

finish("v2.0.bmap", HEAD % "2.0" + """    <ChecksumType> sha256 </ChecksumType>
    <!-- SHA-256 of the whole image (imgcopy's extension; bmaptool ignores it) -->
    <ImageSHA256> %s </ImageSHA256>
    <BmapFileChecksum> @FILESUM@ </BmapFileChecksum>
    <BlockMap>
        <Range chksum="%s"> 0 </Range>
        <Range chksum="%s"> 3-4 </Range>
        <Range chksum="%s"> 9 </Range>
    </BlockMap>
</bmap>
""" % (hashlib.sha256(img).hexdigest(), rsum("sha256", 0, 0), rsum("sha256", 3, 4), rsum("sha256", 9, 9)), "sha256")
