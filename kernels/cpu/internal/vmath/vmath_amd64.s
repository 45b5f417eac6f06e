//go:build amd64

#include "textflag.h"

// Constants of Exp (exp.go), as float32 bit patterns: eight copies each
// for those used as 256-bit memory operands, one for those broadcast into
// registers (sixteen YMM registers are not enough to hold them all).

DATA expLog2e<>+0(SB)/4, $0x3fb8aa3b
DATA expLog2e<>+4(SB)/4, $0x3fb8aa3b
DATA expLog2e<>+8(SB)/4, $0x3fb8aa3b
DATA expLog2e<>+12(SB)/4, $0x3fb8aa3b
DATA expLog2e<>+16(SB)/4, $0x3fb8aa3b
DATA expLog2e<>+20(SB)/4, $0x3fb8aa3b
DATA expLog2e<>+24(SB)/4, $0x3fb8aa3b
DATA expLog2e<>+28(SB)/4, $0x3fb8aa3b
GLOBL expLog2e<>(SB), RODATA|NOPTR, $32

DATA expMagic<>+0(SB)/4, $0x4b400000
DATA expMagic<>+4(SB)/4, $0x4b400000
DATA expMagic<>+8(SB)/4, $0x4b400000
DATA expMagic<>+12(SB)/4, $0x4b400000
DATA expMagic<>+16(SB)/4, $0x4b400000
DATA expMagic<>+20(SB)/4, $0x4b400000
DATA expMagic<>+24(SB)/4, $0x4b400000
DATA expMagic<>+28(SB)/4, $0x4b400000
GLOBL expMagic<>(SB), RODATA|NOPTR, $32

DATA expLn2Hi<>+0(SB)/4, $0x3f318000
DATA expLn2Hi<>+4(SB)/4, $0x3f318000
DATA expLn2Hi<>+8(SB)/4, $0x3f318000
DATA expLn2Hi<>+12(SB)/4, $0x3f318000
DATA expLn2Hi<>+16(SB)/4, $0x3f318000
DATA expLn2Hi<>+20(SB)/4, $0x3f318000
DATA expLn2Hi<>+24(SB)/4, $0x3f318000
DATA expLn2Hi<>+28(SB)/4, $0x3f318000
GLOBL expLn2Hi<>(SB), RODATA|NOPTR, $32

DATA expLn2Lo<>+0(SB)/4, $0xb95e8083
DATA expLn2Lo<>+4(SB)/4, $0xb95e8083
DATA expLn2Lo<>+8(SB)/4, $0xb95e8083
DATA expLn2Lo<>+12(SB)/4, $0xb95e8083
DATA expLn2Lo<>+16(SB)/4, $0xb95e8083
DATA expLn2Lo<>+20(SB)/4, $0xb95e8083
DATA expLn2Lo<>+24(SB)/4, $0xb95e8083
DATA expLn2Lo<>+28(SB)/4, $0xb95e8083
GLOBL expLn2Lo<>(SB), RODATA|NOPTR, $32

DATA expThr<>+0(SB)/4, $0xc2aeac4f
DATA expThr<>+4(SB)/4, $0xc2aeac4f
DATA expThr<>+8(SB)/4, $0xc2aeac4f
DATA expThr<>+12(SB)/4, $0xc2aeac4f
DATA expThr<>+16(SB)/4, $0xc2aeac4f
DATA expThr<>+20(SB)/4, $0xc2aeac4f
DATA expThr<>+24(SB)/4, $0xc2aeac4f
DATA expThr<>+28(SB)/4, $0xc2aeac4f
GLOBL expThr<>(SB), RODATA|NOPTR, $32

DATA expOne<>+0(SB)/4, $0x3f800000
DATA expOne<>+4(SB)/4, $0x3f800000
DATA expOne<>+8(SB)/4, $0x3f800000
DATA expOne<>+12(SB)/4, $0x3f800000
DATA expOne<>+16(SB)/4, $0x3f800000
DATA expOne<>+20(SB)/4, $0x3f800000
DATA expOne<>+24(SB)/4, $0x3f800000
DATA expOne<>+28(SB)/4, $0x3f800000
GLOBL expOne<>(SB), RODATA|NOPTR, $32

DATA expBias<>+0(SB)/4, $0x0000007f
DATA expBias<>+4(SB)/4, $0x0000007f
DATA expBias<>+8(SB)/4, $0x0000007f
DATA expBias<>+12(SB)/4, $0x0000007f
DATA expBias<>+16(SB)/4, $0x0000007f
DATA expBias<>+20(SB)/4, $0x0000007f
DATA expBias<>+24(SB)/4, $0x0000007f
DATA expBias<>+28(SB)/4, $0x0000007f
GLOBL expBias<>(SB), RODATA|NOPTR, $32

DATA expC0<>+0(SB)/4, $0x39506967
GLOBL expC0<>(SB), RODATA|NOPTR, $4

DATA expC1<>+0(SB)/4, $0x3ab743ce
GLOBL expC1<>(SB), RODATA|NOPTR, $4

DATA expC2<>+0(SB)/4, $0x3c088908
GLOBL expC2<>(SB), RODATA|NOPTR, $4

DATA expC3<>+0(SB)/4, $0x3d2aa9c1
GLOBL expC3<>(SB), RODATA|NOPTR, $4

DATA expC4<>+0(SB)/4, $0x3e2aaaaa
GLOBL expC4<>(SB), RODATA|NOPTR, $4

DATA expC5<>+0(SB)/4, $0x3f000000
DATA expC5<>+4(SB)/4, $0x3f000000
DATA expC5<>+8(SB)/4, $0x3f000000
DATA expC5<>+12(SB)/4, $0x3f000000
DATA expC5<>+16(SB)/4, $0x3f000000
DATA expC5<>+20(SB)/4, $0x3f000000
DATA expC5<>+24(SB)/4, $0x3f000000
DATA expC5<>+28(SB)/4, $0x3f000000
GLOBL expC5<>(SB), RODATA|NOPTR, $32

DATA expMax<>+0(SB)/4, $0x42b00000
GLOBL expMax<>(SB), RODATA|NOPTR, $4

// func expCoreAVX2(dst, src *float32, n int, scale, shift float32) float64
//
// For i < n (a multiple of 8): x = src[i]·scale − shift (one rounding),
// dst[i] = e^min(x, 88), 0 where x < -87.33654; returns Σ dst[i] accumulated
// in float64 (2×4 lanes). NaN propagates. dst may alias src. The algorithm
// and constants are Exp's, eight lanes at a time.
TEXT ·expCoreAVX2(SB), NOSPLIT, $0-40
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS scale+24(FP), Y13
	VBROADCASTSS shift+28(FP), Y15
	VBROADCASTSS expC0<>(SB), Y8
	VBROADCASTSS expC1<>(SB), Y9
	VBROADCASTSS expC2<>(SB), Y10
	VBROADCASTSS expC3<>(SB), Y11
	VBROADCASTSS expC4<>(SB), Y12
	VBROADCASTSS expMax<>(SB), Y14
	VXORPD Y0, Y0, Y0
	VXORPD Y1, Y1, Y1
	SHRQ $3, CX
	JZ   done

loop:
	VMOVUPS (SI), Y2
	VFMSUB213PS Y15, Y13, Y2           // x = src·scale − shift
	VMINPS  Y2, Y14, Y2                // x = min(88, x); NaN x stays NaN
	VCMPPS  $1, expThr<>(SB), Y2, Y7   // underflow mask: x < thr
	VMOVUPS expMagic<>(SB), Y3
	VFMADD231PS expLog2e<>(SB), Y2, Y3 // x·log2e + magic: rounds to an integer
	VSUBPS  expMagic<>(SB), Y3, Y3     // kf = round(x·log2e)
	VMOVAPS Y2, Y4
	VFNMADD231PS expLn2Hi<>(SB), Y3, Y4 // r = x − kf·ln2hi
	VFNMADD231PS expLn2Lo<>(SB), Y3, Y4 // r −= kf·ln2lo
	VMOVAPS Y8, Y5                     // Horner: p = ((((c0 r + c1) r + c2) r + c3) r + c4) r + c5
	VFMADD213PS Y9, Y4, Y5
	VFMADD213PS Y10, Y4, Y5
	VFMADD213PS Y11, Y4, Y5
	VFMADD213PS Y12, Y4, Y5
	VFMADD213PS expC5<>(SB), Y4, Y5
	VMULPS  Y4, Y4, Y6                 // r²
	VFMADD213PS Y4, Y6, Y5             // p = p r² + r
	VADDPS  expOne<>(SB), Y5, Y5       // p += 1
	VCVTPS2DQ Y3, Y3                   // n = int32(kf), exact
	VPADDD  expBias<>(SB), Y3, Y3
	VPSLLD  $23, Y3, Y3                // 2^n as float32 bits
	VMULPS  Y3, Y5, Y5                 // e = p·2^n
	VANDNPS Y5, Y7, Y5                 // 0 where underflowed
	VMOVUPS Y5, (DI)
	VCVTPS2PD X5, Y6                   // sum in float64
	VEXTRACTF128 $1, Y5, X5
	VCVTPS2PD X5, Y5
	VADDPD  Y6, Y0, Y0
	VADDPD  Y5, Y1, Y1
	ADDQ $32, SI
	ADDQ $32, DI
	DECQ CX
	JNZ  loop

done:
	VADDPD Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPD X1, X0, X0
	VHADDPD X0, X0, X0
	VZEROUPPER
	MOVSD X0, ret+32(FP)
	RET

// func maxAVX2(x *float32, n int) float32
//
// The largest of x[0:n] for n a positive multiple of 8; NaN if any element
// is NaN (tracked in a separate unordered-compare mask, since VMAXPS alone
// would drop a NaN that is followed by a number).
TEXT ·maxAVX2(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VMOVUPS (SI), Y0
	VCMPPS  $3, Y0, Y0, Y2            // NaN lanes of the first block
	ADDQ $32, SI
	SHRQ $3, CX
	DECQ CX
	JZ   reduce

maxloop:
	VMOVUPS (SI), Y1
	VCMPPS  $3, Y1, Y1, Y3
	VORPS   Y3, Y2, Y2
	VMAXPS  Y1, Y0, Y0
	ADDQ $32, SI
	DECQ CX
	JNZ  maxloop

reduce:
	VEXTRACTF128 $1, Y0, X1
	VMAXPS    X1, X0, X0
	VPERMILPS $0x4e, X0, X1
	VMAXPS    X1, X0, X0
	VPERMILPS $0xb1, X0, X1
	VMAXPS    X1, X0, X0
	VMOVMSKPS Y2, AX
	VZEROUPPER
	TESTL AX, AX
	JNZ   isnan
	MOVSS X0, ret+16(FP)
	RET

isnan:
	MOVL $0x7fc00000, AX
	MOVL AX, ret+16(FP)
	RET
