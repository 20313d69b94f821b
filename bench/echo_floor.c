/* The floor under any UDP server: an epoll loop that reads every datagram waiting and sends
 * each straight back, nothing else. Used by `python -m bench.idle_floor --loop --echo c`,
 * which hands it a bound socket's descriptor; it measures itself from the first datagram for
 * the given seconds and prints "count user_seconds system_seconds". */
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>

static double since(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: echo_floor FD SECONDS\n");
        return 2;
    }
    int fd = atoi(argv[1]);
    double seconds = atof(argv[2]);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        perror("epoll");
        return 1;
    }
    char buf[2048];
    long count = 0;
    int started = 0;
    struct timespec t0;
    struct rusage r0, r1;
    for (;;) {
        struct epoll_event out;
        if (epoll_wait(ep, &out, 1, 10000) <= 0)
            break; /* the peer stopped */
        for (;;) {
            struct sockaddr_storage from;
            socklen_t len = sizeof from;
            ssize_t n = recvfrom(fd, buf, sizeof buf, MSG_DONTWAIT, (struct sockaddr *)&from, &len);
            if (n < 0)
                break;
            if (!started) {
                started = 1;
                clock_gettime(CLOCK_MONOTONIC, &t0);
                getrusage(RUSAGE_SELF, &r0);
            }
            sendto(fd, buf, (size_t)n, 0, (struct sockaddr *)&from, len);
            count++;
        }
        if (started && since(&t0) >= seconds)
            break;
    }
    getrusage(RUSAGE_SELF, &r1);
    printf("%ld %.6f %.6f\n", count,
           (double)(r1.ru_utime.tv_sec - r0.ru_utime.tv_sec) + (double)(r1.ru_utime.tv_usec - r0.ru_utime.tv_usec) / 1e6,
           (double)(r1.ru_stime.tv_sec - r0.ru_stime.tv_sec) + (double)(r1.ru_stime.tv_usec - r0.ru_stime.tv_usec) / 1e6);
    return 0;
}
