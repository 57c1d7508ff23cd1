/* Hide CPU features from a process: CPUID answers as an AVX2-only CPU would (no AVX-512, no AMX, no AVX-VNNI).
 *
 * Preloaded (LD_PRELOAD) into a process, it turns on the kernel's CPUID faulting for the process
 * (arch_prctl(ARCH_SET_CPUID, 0); needs the CPU flag "cpuid_fault"), so that every CPUID instruction traps.
 * The SIGSEGV handler runs the real CPUID with faulting briefly off, clears the hidden feature bits and steps
 * over the instruction.  Libraries that pick their kernels from CPUID (onnxruntime's MLAS, oneDNN, MKL, torch's
 * cpuinfo) then all take their AVX2 paths, which CPU-specific switches such as ONEDNN_MAX_CPU_ISA cannot do for
 * every engine at once.  The instructions still run on this CPU's cores: clock, caches and memory are this
 * machine's, so it answers "which code runs faster on AVX2", not "how fast is that other CPU".
 *
 * A SIGSEGV handler installed later by the program (Python's faulthandler, say) is kept as the one this
 * handler passes every other fault to, so traps keep working.  Faulting is per thread, inherited by new
 * threads and children, and reset by execve: preload it again in every program (LD_PRELOAD is inherited).
 *
 * Build: gcc -O2 -shared -fPIC -o hide_cpu_features.so hide_cpu_features.c -ldl   (tools/as_avx2.sh does it)
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef ARCH_GET_CPUID
#define ARCH_GET_CPUID 0x1011
#define ARCH_SET_CPUID 0x1012
#endif

/* leaf 7, subleaf 0 */
#define EBX7_HIDDEN ((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) | \
                     (1u << 31))  /* AVX512 F DQ IFMA PF ER CD BW VL */
#define ECX7_HIDDEN ((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14))  /* VBMI VBMI2 VNNI BITALG
                                                                                       VPOPCNTDQ */
#define EDX7_HIDDEN ((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25))
/* 4VNNIW 4FMAPS VP2INTERSECT AMX-BF16 AVX512-FP16 AMX-TILE AMX-INT8 */
/* leaf 7, subleaf 1 */
#define EAX71_HIDDEN ((1u << 4) | (1u << 5) | (1u << 21))  /* AVX-VNNI AVX512-BF16 AMX-FP16 */
#define EDX71_HIDDEN ((1u << 4) | (1u << 5) | (1u << 19))  /* AVX-VNNI-INT8 AVX-NE-CONVERT AVX10 */

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);

static struct sigaction program_handler;  /* what the program asked for SIGSEGV; default until it asks */
static sigaction_fn real_sigaction;

static long set_cpuid_faulting(int on) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, on ? 0 : 1); }

static void answer_cpuid(ucontext_t *uc) {
    greg_t *r = uc->uc_mcontext.gregs;
    uint32_t leaf = (uint32_t)r[REG_RAX], sub = (uint32_t)r[REG_RCX], a, b, c, d;
    set_cpuid_faulting(0);
    __cpuid_count(leaf, sub, a, b, c, d);
    set_cpuid_faulting(1);
    if (leaf == 7 && sub == 0) {
        b &= ~EBX7_HIDDEN;
        c &= ~ECX7_HIDDEN;
        d &= ~EDX7_HIDDEN;
    } else if (leaf == 7 && sub == 1) {
        a &= ~EAX71_HIDDEN;
        d &= ~EDX71_HIDDEN;
    }
    r[REG_RAX] = a;
    r[REG_RBX] = b;
    r[REG_RCX] = c;
    r[REG_RDX] = d;
    r[REG_RIP] += 2;
}

static void on_segv(int sig, siginfo_t *info, void *ctx) {
    ucontext_t *uc = ctx;
    const unsigned char *ip = (const unsigned char *)uc->uc_mcontext.gregs[REG_RIP];
    if (info->si_code == SI_KERNEL && ip[0] == 0x0f && ip[1] == 0xa2) {  /* a trapped CPUID */
        answer_cpuid(uc);
        return;
    }
    if (program_handler.sa_flags & SA_SIGINFO) {
        program_handler.sa_sigaction(sig, info, ctx);
    } else if (program_handler.sa_handler != SIG_DFL && program_handler.sa_handler != SIG_IGN) {
        program_handler.sa_handler(sig);
    } else {  /* default action: die of this fault as if we were not here */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        real_sigaction(SIGSEGV, &dfl, NULL);
    }
}

/* The program's own SIGSEGV handler becomes the one faults other than CPUID are passed to. */
int sigaction(int signum, const struct sigaction *act, struct sigaction *old) {
    if (!real_sigaction) real_sigaction = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    if (signum != SIGSEGV) return real_sigaction(signum, act, old);
    if (old) *old = program_handler;
    if (act) program_handler = *act;
    return 0;
}

__attribute__((constructor)) static void hide_cpu_features(void) {
    real_sigaction = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    memset(&program_handler, 0, sizeof program_handler);
    program_handler.sa_handler = SIG_DFL;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (real_sigaction(SIGSEGV, &sa, NULL) != 0 || set_cpuid_faulting(1) != 0) {
        fprintf(stderr, "hide_cpu_features: this CPU or kernel has no CPUID faulting (flag cpuid_fault); "
                        "cannot hide CPU features\n");
        _exit(3);
    }
}
