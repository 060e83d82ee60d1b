/* main.c - placeholder until the broker lands in this session. */
#include <stdio.h>
int main(void)
{
	puts("keepmq " KEEPMQ_VERSION);
	return 0;
}
