/* Workspaces kept between calls.
 *
 * Every kernel allocates its workspace per call (fc_alloc) and frees it at the end (fc_free).
 * Left to malloc, a workspace of megabytes is handed back to the system after the call (an mmap
 * unmapped, or the heap's top trimmed) and the next call faults in fresh zeroed pages: measured,
 * c.winograd_f4k3 on 8x512x7x7 (Intel Xeon model 207, avx512) took 13.3 ms a call with 770 minor
 * page faults when torch was imported after fastconv (whose allocations change glibc's
 * heuristics), against 5.2-5.8 ms and 58 faults with its workspace kept.  So blocks of at least
 * FC_WS_MIN bytes go to a small pool on fc_free and serve later calls of a similar size (at most
 * twice what they ask, so one huge block does not pin itself to small calls), up to FC_WS_SLOTS
 * blocks and FC_WS_KEEP bytes in all; fc_workspace_release() hands them back (fastconv's
 * release_workspace()).  Smaller blocks go straight to malloc, which keeps those itself.
 *
 * Thread-safe (a mutex; calls of several Python threads allocate concurrently); a fork while
 * another thread holds the mutex cannot deadlock the child: pthread_atfork takes it around fork.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include "fc_internal.h"

#define FC_WS_HEADER 64                      /* keeps the block 64-byte aligned; holds its size */
#define FC_WS_MIN ((size_t)256 << 10)
#define FC_WS_SLOTS 8
#define FC_WS_KEEP ((size_t)256 << 20)

static struct { char *base; size_t size; } fc_ws_pool[FC_WS_SLOTS];
static size_t fc_ws_kept;
static pthread_mutex_t fc_ws_lock = PTHREAD_MUTEX_INITIALIZER;

static void fc_ws_prepare(void) { pthread_mutex_lock(&fc_ws_lock); }
static void fc_ws_after(void) { pthread_mutex_unlock(&fc_ws_lock); }

__attribute__((constructor)) static void fc_ws_init(void) {
    pthread_atfork(fc_ws_prepare, fc_ws_after, fc_ws_after);
}

void *fc_alloc(size_t bytes) {
    bytes = (bytes + 63) / 64 * 64;
    if (bytes == 0) bytes = 64;
    if (bytes >= FC_WS_MIN) {
        int best = -1;
        pthread_mutex_lock(&fc_ws_lock);
        for (int i = 0; i < FC_WS_SLOTS; i++)
            if (fc_ws_pool[i].base && fc_ws_pool[i].size >= bytes && fc_ws_pool[i].size / 2 <= bytes &&
                (best < 0 || fc_ws_pool[i].size < fc_ws_pool[best].size))
                best = i;
        char *base = NULL;
        if (best >= 0) {
            base = fc_ws_pool[best].base;
            fc_ws_kept -= fc_ws_pool[best].size;
            fc_ws_pool[best].base = NULL;
        }
        pthread_mutex_unlock(&fc_ws_lock);
        if (base) return base + FC_WS_HEADER;
    }
    char *base = aligned_alloc(64, bytes + FC_WS_HEADER);
    if (!base) return NULL;
    *(size_t *)base = bytes;
    return base + FC_WS_HEADER;
}

void fc_free(void *p) {
    if (!p) return;
    char *base = (char *)p - FC_WS_HEADER;
    const size_t size = *(size_t *)base;
    if (size < FC_WS_MIN) {
        free(base);
        return;
    }
    pthread_mutex_lock(&fc_ws_lock);
    int slot = -1, smallest = -1;
    for (int i = 0; i < FC_WS_SLOTS; i++) {
        if (!fc_ws_pool[i].base) {
            if (slot < 0) slot = i;
        } else if (smallest < 0 || fc_ws_pool[i].size < fc_ws_pool[smallest].size) {
            smallest = i;
        }
    }
    char *drop = base;  /* what leaves the pool: the incoming block, or a smaller one it replaces */
    if (slot >= 0 && fc_ws_kept + size <= FC_WS_KEEP) {
        fc_ws_pool[slot].base = base, fc_ws_pool[slot].size = size, fc_ws_kept += size, drop = NULL;
    } else if (smallest >= 0 && fc_ws_pool[smallest].size < size &&
               fc_ws_kept - fc_ws_pool[smallest].size + size <= FC_WS_KEEP) {
        drop = fc_ws_pool[smallest].base;
        fc_ws_kept += size - fc_ws_pool[smallest].size;
        fc_ws_pool[smallest].base = base, fc_ws_pool[smallest].size = size;
    }
    pthread_mutex_unlock(&fc_ws_lock);
    free(drop);
}

int64_t fc_workspace_kept(void) {
    pthread_mutex_lock(&fc_ws_lock);
    const int64_t kept = (int64_t)fc_ws_kept;
    pthread_mutex_unlock(&fc_ws_lock);
    return kept;
}

void fc_workspace_release(void) {
    pthread_mutex_lock(&fc_ws_lock);
    for (int i = 0; i < FC_WS_SLOTS; i++) {
        free(fc_ws_pool[i].base);
        fc_ws_pool[i].base = NULL;
    }
    fc_ws_kept = 0;
    pthread_mutex_unlock(&fc_ws_lock);
}
