/* main.c - the plugboard command line (being assembled). */
#include <stdio.h>

int
main(void)
{
    return 0;
}
