// Memory a pass streams, asked for in 2 MiB pages (transparent huge pages, "madvise" mode): with 4 KiB pages every
// pass takes a TLB miss per page (~250,000 per pass over the 1.5B's packed weights), and whether the kernel backed
// such memory with 2 MiB pages by itself varied from run to run. The packed weights use it, and so do the
// benchmarks that measure streaming against them, so that both read the same kind of pages.
#pragma once

#include <cstddef>
#include <memory>

namespace adadecode {

// Asks for 2 MiB pages over the whole 2 MiB pages inside [base, base + size). Must run before the pages are first
// touched. Where transparent huge pages are off or unsupported this does nothing.
void request_huge_pages(void *base, size_t size);

using HugePageBuffer = std::unique_ptr<void, void (*)(void *)>;

// At least `bytes`, aligned on 2 MiB, with 2 MiB pages requested; empty when the allocation fails.
HugePageBuffer allocate_huge_pages(size_t bytes);

}  // namespace adadecode
