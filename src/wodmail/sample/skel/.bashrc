# wodmail sample skeleton
export PS1='\u@wod:\w\$ '
