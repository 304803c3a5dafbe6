/*
 * The machine's own timing floor for bench/loop: a thread that does nothing but wake on an
 * absolute 1 kHz grid (clock_nanosleep on CLOCK_MONOTONIC, as cyclictest does) and records how
 * late it woke. Whatever this C thread misses, no loop on the same machine can hold: on a virtual
 * machine the hypervisor takes the vCPU away for milliseconds at a time. bench/loop.ts compiles
 * it with `cc -O2` and runs it beside each loop, at the loop's scheduling, for the same duration.
 *
 *   floor-probe SECONDS PERIOD_US PRIORITY   (PRIORITY 0: normal scheduling; > 0: SCHED_FIFO)
 *
 * Prints one JSON object: wakes, misses (grid points passed over because the thread woke more
 * than a period late, counted as bench/loop counts skipped ticks), wake lateness p50/p99/max in
 * ms, and the scheduling it got.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long long ns_of(struct timespec t) { return (long long)t.tv_sec * 1000000000LL + t.tv_nsec; }

static int by_value(const void *a, const void *b) {
  long long x = *(const long long *)a, y = *(const long long *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: floor-probe SECONDS PERIOD_US PRIORITY\n");
    return 2;
  }
  const double seconds = atof(argv[1]);
  const long long period = atoll(argv[2]) * 1000LL;
  const int priority = atoi(argv[3]);
  if (!(seconds > 0) || period <= 0) {
    fprintf(stderr, "floor-probe: SECONDS and PERIOD_US must be positive\n");
    return 2;
  }
  char scheduling[160] = "normal";
  if (priority > 0) {
    struct sched_param p = {.sched_priority = priority};
    if (sched_setscheduler(0, SCHED_FIFO, &p) == 0)
      snprintf(scheduling, sizeof scheduling, "SCHED_FIFO %d", priority);
    else
      snprintf(scheduling, sizeof scheduling, "normal (SCHED_FIFO refused: %s)", strerror(errno));
  }
  const long long wanted = (long long)(seconds * 1e9 / (double)period);
  long long *late = malloc(sizeof(long long) * (size_t)(wanted + 1));
  if (!late) return 3;
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  const long long start = ns_of(now);
  long long index = 1, wakes = 0, misses = 0;
  while (index <= wanted) {
    const long long deadline = start + index * period;
    struct timespec at = {.tv_sec = deadline / 1000000000LL, .tv_nsec = deadline % 1000000000LL};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, NULL) == EINTR) {
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    const long long lateness = ns_of(now) - deadline;
    late[wakes++] = lateness;
    const long long skipped = lateness / period;
    misses += skipped;
    index += skipped + 1;
  }
  qsort(late, (size_t)wakes, sizeof(long long), by_value);
  const double p50 = late[wakes / 2] / 1e6, p99 = late[(wakes * 99) / 100] / 1e6;
  printf("{\"wakes\":%lld,\"misses\":%lld,\"late_p50_ms\":%.4f,\"late_p99_ms\":%.4f,\"late_max_ms\":%.4f,"
         "\"scheduling\":\"%s\"}\n",
         wakes, misses, p50, p99, late[wakes - 1] / 1e6, scheduling);
  free(late);
  return 0;
}
