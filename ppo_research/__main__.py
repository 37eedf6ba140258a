import sys

from .app import check_group_choices, main

check_group_choices(sys.argv[1:])
main()
