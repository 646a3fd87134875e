// Does arithmetic overlap a memory stream on this CPU? One thread reads 1 GiB (huge pages) 64 bytes at a time and
// does W vpdpbusd per line on four loop-carried chains, without (PF=0) or with software prefetch (PF=1: prefetcht1,
// PF=2: prefetcht0) `dist` bytes ahead; then the same arithmetic on 16 KiB in L1. Experiment, not built by CMake:
//   g++ -O3 -march=native -o stream_overlap stream_overlap.cpp && ./stream_overlap
#include <algorithm>
#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cstdint>
#include <sys/mman.h>
// stream over a buffer bigger than L3; per 64-byte line do W dependent-free vpdpbusd ops (W = work units)
template <int W, int PF>
__attribute__((noinline)) __m512i stream(const uint8_t* b, size_t n, size_t dist) {
    __m512i acc[8]; for (int i=0;i<8;++i) acc[i]=_mm512_setzero_si512();
    const __m512i x=_mm512_set1_epi8(3);
    for (size_t i=0;i<n;i+=256) {
        if (PF==1) for (int l=0;l<4;++l) _mm_prefetch((const char*)b+i+dist+64*l, _MM_HINT_T1);
        if (PF==2) for (int l=0;l<4;++l) _mm_prefetch((const char*)b+i+dist+64*l, _MM_HINT_T0);
        for (int l=0;l<4;++l) {
            __m512i v=_mm512_load_si512(b+i+64*l);
            acc[l]=_mm512_add_epi32(acc[l],v);
            for (int w=0; w<W; ++w) acc[4+(w&3)]=_mm512_dpbusd_epi32(acc[4+(w&3)],v,x);
        }
    }
    __m512i s=acc[0]; for(int i=1;i<8;++i) s=_mm512_add_epi32(s,acc[i]); return s;
}
template <int W, int PF> void run(const uint8_t* b, size_t n, size_t dist) {
    double best=1e9; __m512i s=_mm512_setzero_si512();
    for (int r=0;r<4;++r){ auto t0=std::chrono::steady_clock::now(); s=_mm512_add_epi32(s,stream<W,PF>(b,n,dist));
      best=std::min(best,std::chrono::duration<double>(std::chrono::steady_clock::now()-t0).count()); }
    int o[16]; _mm512_storeu_si512(o,s);
    printf("W=%2d PF=%d dist=%6zu: %6.1f ms  %5.1f GB/s %d\n", W, PF, dist, best*1e3, n/best/1e9, o[0]&1);
}
int main(){
    size_t n = size_t(1)<<30;
    uint8_t* b=(uint8_t*)aligned_alloc(2<<20, n); madvise(b,n,MADV_HUGEPAGE); memset(b,1,n);
    run<0,0>(b,n,0); run<0,1>(b,n,4096); run<0,1>(b,n,16384);
    run<4,0>(b,n,0); run<4,1>(b,n,4096); run<4,1>(b,n,16384); run<4,2>(b,n,4096);
    run<8,0>(b,n,0); run<8,1>(b,n,4096); run<8,1>(b,n,16384);
    run<16,0>(b,n,0); run<16,1>(b,n,4096); run<16,1>(b,n,16384);
    printf("-- the same arithmetic on 16 KiB in L1 (n/16 KiB times):\n");
    size_t small=16384; double best;
    auto cached=[&](auto fn, const char* name){ best=1e9; for(int r=0;r<3;++r){auto t0=std::chrono::steady_clock::now(); __m512i s=_mm512_setzero_si512(); for(size_t k=0;k<n/small;++k) s=_mm512_add_epi32(s,fn(b,small,0)); volatile int o=_mm_cvtsi128_si32(_mm512_castsi512_si128(s)); (void)o; best=std::min(best,std::chrono::duration<double>(std::chrono::steady_clock::now()-t0).count());} printf("%s %.1f ms\n",name,best*1e3);};
    cached(stream<0,0>,"W=0"); cached(stream<4,0>,"W=4"); cached(stream<8,0>,"W=8"); cached(stream<16,0>,"W=16");
}
