/* Rust's std (1.78 and later) draws its random numbers from ProcessPrng in
 * bcryptprimitives.dll, which wine 8 does not have. This stand-in, put
 * beside a test executable, gives it RtlGenRandom's instead. For running
 * the Windows build under wine in CI only; real Windows has the DLL. */
#include <windows.h>
#define SystemFunction036 NTAPI SystemFunction036
#include <ntsecapi.h>
#undef SystemFunction036

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG chunk = len > 0x7fffffff ? 0x7fffffff : (ULONG)len;
        if (!RtlGenRandom(data, chunk)) return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
