// The AVX-512 VNNI Q4_K kernel's inner loop for NR activation rows (one 16-row tile's sub-block per iteration: four
// 64-byte weight loads, low nibbles by vpand, high ones by GFNI, 8 x NR vpdpbusd against broadcast activations, 2 x NR
// vpdpwssd by the scale), all in L1, in variants that take one piece away or change how the activations come in.
// Variants 11-13, added for the AMD EPYC Zen 4 run (../../amd-epyc-zen4-2026-12-07/): one chain per row plus vpmulld
// by the scale (that class's kernel), two chains blended into one vpdpwssd (vpslld + vpblendmw), and one chain with no
// scale. Experiment, not built by CMake:
//   for nr in 1 2 4 8; do g++ -O3 -march=native -DNR=$nr -o q4k_inner_loop q4k_inner_loop.cpp && ./q4k_inner_loop; done
#include <immintrin.h>
#include <chrono>
#include <cstdio>
#include <cstdint>
#ifndef NR
#define NR 4
#endif
// VARIANT 0: mem bcast asm; 1: register operand (pre-broadcast vectors from memory, full 64B load); 2: no gf2p8 (high=low); 3: no dpwssd (add)
template <int V>
__attribute__((noinline)) __m512i mimic(long n, const uint8_t* wbuf, const int8_t* p) {
    __m512i sums[NR]; for(int r=0;r<NR;++r) sums[r]=_mm512_setzero_si512();
    const __m512i m4=_mm512_set1_epi8(15), g=_mm512_set1_epi64(0x1020408000000000LL), sc=_mm512_set1_epi32(3);
    for (long k=0;k<n;++k) {
        const uint8_t* qs = wbuf + (k & 7)*256;
        __m512i dl[NR], dh[NR];
        for(int t=0;t<4;++t){ __m512i pk=_mm512_loadu_si512(qs+64*t); __m512i l=_mm512_and_si512(pk,m4); __m512i h;
            if (V==2) h=_mm512_xor_si512(pk,m4); else __asm__("vgf2p8affineqb $0, %2, %1, %0":"=v"(h):"v"(pk),"v"(g));
            if (V==11 || V==13) { for(int r=0;r<NR;++r){ const int8_t* q=p+64*r+8*t; if(t==0) dl[r]=_mm512_setzero_si512();
                int32_t a0,a1; __builtin_memcpy(&a0,q,4); __builtin_memcpy(&a1,q+4,4);
                dl[r]=_mm512_dpbusd_epi32(_mm512_dpbusd_epi32(dl[r],l,_mm512_set1_epi32(a0)),h,_mm512_set1_epi32(a1)); }
              continue; }
            if (V==9) { for(int r=0;r<NR;++r){ const int8_t* q=p+64*r+8*t; if(t==0) dl[r]=_mm512_setzero_si512();
                __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(dl[r]) : "v"(l), "m"(*(const int32_t*)(q))); }
              for(int r=0;r<NR;++r){ const int8_t* q=p+64*r+8*t; if(t==0) dh[r]=_mm512_setzero_si512();
                __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(dh[r]) : "v"(h), "m"(*(const int32_t*)(q+4))); }
              continue; }
            for(int r=0;r<NR;++r){ const int8_t* q=p+64*r+8*t;
              if(t==0){dl[r]=_mm512_setzero_si512(); dh[r]=_mm512_setzero_si512();}
              if (V==10) {
                dl[r]=_mm512_dpbusd_epi32(dl[r],l,_mm512_load_si512(p+128*r+512*t));
                dh[r]=_mm512_dpbusd_epi32(dh[r],h,_mm512_load_si512(p+128*r+64+512*t));
              } else if (V==6) {
                __m512i b0,b1;
                __asm__("vpbroadcastd %1, %0" : "=v"(b0) : "m"(*(const int32_t*)(q)));
                __asm__("vpbroadcastd %1, %0" : "=v"(b1) : "m"(*(const int32_t*)(q+4)));
                dl[r]=_mm512_dpbusd_epi32(dl[r],l,b0);
                dh[r]=_mm512_dpbusd_epi32(dh[r],h,b1);
              } else if (V==5) {
                int32_t a0,a1; __builtin_memcpy(&a0,q,4); __builtin_memcpy(&a1,q+4,4);
                dl[r]=_mm512_dpbusd_epi32(dl[r],l,_mm512_set1_epi32(a0));
                dh[r]=_mm512_dpbusd_epi32(dh[r],h,_mm512_set1_epi32(a1));
              } else if (V==1 || V==4) {
                dl[r]=_mm512_dpbusd_epi32(dl[r],l,_mm512_loadu_si512(q+64*r*0 + 0));
                dh[r]=_mm512_dpbusd_epi32(dh[r],h,_mm512_loadu_si512(q+64));
              } else {
              __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(dl[r]) : "v"(l), "m"(*(const int32_t*)(q)));
              __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(dh[r]) : "v"(h), "m"(*(const int32_t*)(q+4)));}}}
        for(int r=0;r<NR;++r) {
          if (V==11) { sums[r]=_mm512_add_epi32(sums[r],_mm512_mullo_epi32(dl[r],sc)); continue; }
          if (V==13) { sums[r]=_mm512_add_epi32(sums[r],dl[r]); continue; }
          if (V==12) { __m512i c=_mm512_mask_blend_epi16(0xAAAAAAAAu,dl[r],_mm512_slli_epi32(dh[r],16)); sums[r]=_mm512_dpwssd_epi32(sums[r],c,sc); continue; }
          if (V==3) sums[r]=_mm512_add_epi32(sums[r],_mm512_add_epi32(dl[r],dh[r]));
          else sums[r]=_mm512_dpwssd_epi32(_mm512_dpwssd_epi32(sums[r],dl[r],sc),dh[r],sc);
        }
    }
    __m512i s=sums[0]; for(int r=1;r<NR;++r) s=_mm512_add_epi32(s,sums[r]); return s;
}
template<int V> void run(const uint8_t* wb, const int8_t* p, const char* name){
    long m=5000000;
    auto t0=std::chrono::steady_clock::now(); __m512i s=mimic<V>(m,wb,p); auto t1=std::chrono::steady_clock::now();
    double sec=std::chrono::duration<double>(t1-t0).count(); int out[16]; _mm512_storeu_si512(out,s);
    printf("%-28s %.1f GMAC/s (%.2f ns/iter) %d\n", name, m*8.0*NR*64/sec/1e9, sec/m*1e9, out[0]&1);
}
int main(){
    alignas(64) static int8_t p[8192]; alignas(64) static uint8_t wb[4096];
    for(int i=0;i<8192;++i){p[i]=i*7;} for(int i=0;i<4096;++i)wb[i]=i*13;
    for (int rep=0;rep<2;++rep){
    run<0>(wb,p,"mem-bcast (kernel)"); run<1>(wb,p,"full-vector loads"); run<2>(wb,p,"no gfni");
    run<3>(wb,p,"no dpwssd"); run<5>(wb,p,"set1 (vpbroadcastd)"); run<6>(wb,p,"vpbroadcastd m32 asm"); run<9>(wb,p,"bcast, lows then highs"); run<10>(wb,p,"aligned full loads"); run<11>(wb,p,"1 chain + mulld (zen4)"); run<12>(wb,p,"2 chains, blend, 1 dpwssd"); run<13>(wb,p,"1 chain, no scale"); }
}
