#include "huge_pages.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>

namespace adadecode {

namespace {
constexpr uintptr_t huge_page = uintptr_t(2) << 20;
}  // namespace

void request_huge_pages(void *base, size_t size) {
#ifdef MADV_HUGEPAGE
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(base) + huge_page - 1) / huge_page * huge_page;
    const uintptr_t end = (reinterpret_cast<uintptr_t>(base) + size) / huge_page * huge_page;
    if (end > begin)
        madvise(reinterpret_cast<void *>(begin), end - begin, MADV_HUGEPAGE);
#else
    (void)base;
    (void)size;
#endif
}

HugePageBuffer allocate_huge_pages(size_t bytes) {
    const size_t rounded = (bytes + huge_page - 1) / huge_page * huge_page;  // aligned_alloc wants a multiple
    HugePageBuffer buffer(std::aligned_alloc(huge_page, rounded), std::free);
    if (buffer)
        request_huge_pages(buffer.get(), rounded);
    return buffer;
}

}  // namespace adadecode
